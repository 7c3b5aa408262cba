"""Reading a ``text/event-stream`` answer (server-sent events) line by line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """One dispatched event: its name (``message`` unless the server named it), data, id."""

    event: str
    data: str
    id: str | None


def messages(lines: Iterable[str]) -> Iterator[Message]:
    """The events of a stream given as lines (without their line ends), as the HTML
    standard's parser reads them: comments (``: ...``) and ``retry`` are skipped, ``data``
    lines join with newlines, a blank line dispatches."""
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Message(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
