"""The streaming JSON checker agrees with Python's own reader on what is JSON, wherever
the chunks are cut, and finds the span of the ``predictions`` member."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from deployserver.serving.jsonstream import MAX_DEPTH, JsonError, JsonScanner

KEYS = ["predictions", "a", "b", "pred", "préd", "predictions\u0000", "\\"]
LEAVES: list[Any] = [0, -1, 1.5, 1e300, -0.0, 12345678901234567890, True, False, None]
LEAVES += ["", 'a"b\\c\n\u00e9\U0001f600', "predictions", "x" * 70]


def strict(doc: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(name)

    return json.loads(doc, parse_constant=refuse)


def value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        return rng.choice(LEAVES)
    if roll < 0.7:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(KEYS): value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate(doc: bytes, rng: random.Random) -> bytes:
    out = bytearray(doc)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(out) + 1)
        roll = rng.random()
        if roll < 0.4 and out:
            del out[min(at, len(out) - 1)]
        elif roll < 0.8:
            out.insert(at, rng.choice(b'{}[]",:\\ 0123456789.eE-+tfnrux\x01\xff'))
        else:
            out[at:at] = rng.choice([b"true", b"nul", b"1.", b"01", b"\\u12", b"\\uzz", b"NaN"])
    return bytes(out)


def scan(doc: bytes, rng: random.Random, most: int) -> JsonScanner:
    scanner = JsonScanner()
    at = 0
    while at < len(doc):
        step = rng.randint(1, most)
        scanner.feed(doc[at : at + step])
        at += step
    scanner.close()
    return scanner


@pytest.mark.parametrize("most", [1, 7, 4096])
def test_agrees_with_json_loads_on_random_documents(most: int) -> None:
    rng = random.Random(most)
    for _ in range(3000):
        spacing = rng.choice([None, 0, 2])
        doc = json.dumps(value(rng), indent=spacing, ensure_ascii=rng.random() < 0.5).encode()
        if rng.random() < 0.5:
            doc = mutate(doc, rng)
        try:
            expected, valid = strict(doc), True
        except (ValueError, RecursionError):
            valid = False
        try:
            scanner = scan(doc, rng, most)
        except JsonError:
            assert not valid, doc
            continue
        assert valid, doc
        if isinstance(expected, dict) and "predictions" in expected:
            assert scanner.value_start is not None and scanner.value_end is not None, doc
            span = doc[scanner.value_start : scanner.value_end]
            assert strict(span) == expected["predictions"], doc
        else:
            assert scanner.value_start is None, doc
        assert scanner.is_object is isinstance(expected, dict)


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b"{",
        b'{"predictions": 1',
        b'{"predictions": 1}}',
        b'{"predictions": 1} x',
        b'{"predictions": NaN}',
        b'{"predictions": Infinity}',
        b'{"predictions": "\x01"}',
        b'{"predictions": "\\x"}',
        b'{"predictions": 01}',
        b'{"predictions" 1}',
        b'{"predictions": [1,]}',
        b'{"predictions": "\xff"}',
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b'{"predictions": ' + b"1" * 5000 + b"}",
    ],
)
def test_refuses_what_is_not_json(doc: bytes) -> None:
    scanner = JsonScanner()
    with pytest.raises(JsonError):
        scanner.feed(doc)
        scanner.close()


def test_finds_the_member_however_it_is_written_and_takes_the_last() -> None:
    doc = b'{"a": [1, {"predictions": 0}], "pr\\u0065dictions": {"x": [1, 2]}, "b": 2}'
    scanner = JsonScanner()
    for byte in range(len(doc)):
        scanner.feed(doc[byte : byte + 1])
    scanner.close()
    assert doc[scanner.value_start : scanner.value_end] == b'{"x": [1, 2]}'
    twice = b'{"predictions": 1, "predictions": [true]}'
    scanner = JsonScanner()
    scanner.feed(twice)
    scanner.close()
    assert twice[scanner.value_start : scanner.value_end] == b"[true]"


def test_a_large_string_streams_in_bounded_memory() -> None:
    scanner = JsonScanner()
    head, opening = b'{"predictions": ', b'{"blob": "'
    scanner.feed(head + opening)
    block = b"y" * 65536
    for _ in range(256):  # 16 MiB
        scanner.feed(block)
        assert len(scanner._pending) == 0  # nothing of the string is kept
    scanner.feed(b'"}}')
    scanner.close()
    assert scanner.value_start == len(head)
    assert scanner.value_end == len(head) + len(opening) + 256 * len(block) + len(b'"}')
