"""A streaming JSON checker: validates a document fed in chunks, in memory bounded by the
longest number, and finds the byte span of one top-level member's value."""

from __future__ import annotations

import codecs
import json
import re

MAX_DEPTH = 1000
"""Deeper nesting is refused: most JSON readers (Python's among them) give up before it."""
MAX_SCALAR = 4096
"""Longest number (or literal) accepted; Python's own int reading stops near 4300 digits."""
_MAX_KEY = 256  # raw bytes of a key worth decoding: 11 characters are 66 bytes at most

_WS = re.compile(rb"[ \t\r\n]*")
_STRING_RUN = re.compile(rb'[^"\\\x00-\x1f]*')
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_SCALAR_RUN = re.compile(rb'[^ \t\r\n,:\[\]{}"]*')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = frozenset({b"true", b"false", b"null"})
_ESCAPES = frozenset(b'"\\/bfnrt')
# Runs of simple items (scalars, and containers holding only scalars) are consumed in one
# regex match rather than token by token: a big answer is often an array of numbers, of
# small records or of short rows. An item of a run counts only when the byte after it is
# in the buffer, so one cut by the end of a chunk waits for the next chunk.
_W = rb"[ \t\r\n]*"
_SIMPLE = (
    rb"(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
    rb'|true|false|null|"[^"\\\x00-\x1f]*")'
)
_KEY = rb'"[^"\\\x00-\x1f]*"' + _W + rb":" + _W
_FLAT_ARRAY = (
    rb"\[" + _W + rb"(?:" + _SIMPLE + rb"(?:" + _W + rb"," + _W + _SIMPLE + rb")*)?" + _W + rb"\]"
)
_FLAT_OBJECT = (
    rb"\{"
    + _W
    + rb"(?:"
    + _KEY
    + _SIMPLE
    + rb"(?:"
    + _W
    + rb","
    + _W
    + _KEY
    + _SIMPLE
    + rb")*)?"
    + _W
    + rb"\}"
)
_ITEM = rb"(?:" + _SIMPLE + rb"|" + _FLAT_ARRAY + rb"|" + _FLAT_OBJECT + rb")"
_FLAT = {0x5B: re.compile(_FLAT_ARRAY), 0x7B: re.compile(_FLAT_OBJECT)}
_ARRAY_RUN = re.compile(rb"(?:" + _W + rb"," + _W + _ITEM + rb"(?=" + _W + rb"[,\]]))*")
_OBJECT_RUN = re.compile(rb"(?:" + _W + rb"," + _W + _KEY + _ITEM + rb"(?=" + _W + rb"[,}]))*")

# what the scanner expects next
VALUE, VALUE_OR_CLOSE, KEY, KEY_OR_CLOSE, COLON, AFTER_VALUE, DONE = range(7)


class JsonError(ValueError):
    """The document is not valid JSON; ``offset`` is where the scanner noticed."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


class JsonScanner:
    """Feed a JSON document in chunks; ``close()`` checks it ended. When the document is an
    object, ``value_start``/``value_end`` are the byte offsets of its ``member``'s value
    (the last one, as JSON readers take it), else None."""

    def __init__(self, member: str | None = "predictions") -> None:
        self.member = member
        self.value_start: int | None = None
        self.value_end: int | None = None
        self.is_object: bool | None = None
        """Whether the document is an object; None until its first byte."""
        self._offset = 0  # of self._pending[0] in the document
        self._pending = b""  # a token cut by the end of a chunk
        self._stack = bytearray()
        self._expect = VALUE
        self._in_string = False
        self._string_is_key = False
        self._key: bytearray | None = None
        self._member_next = False
        self._capturing = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def feed(self, data: bytes) -> None:
        """Check the next chunk of the document."""
        try:
            self._utf8.decode(data)
        except UnicodeDecodeError as exc:
            raise JsonError("invalid UTF-8", self._offset + len(self._pending)) from exc
        self._scan(self._pending + data if self._pending else data, final=False)

    def close(self) -> None:
        """Check the document is complete."""
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise JsonError("invalid UTF-8", self._offset) from exc
        self._scan(self._pending, final=True)
        if self._in_string:
            raise JsonError("unterminated string", self._offset)
        if self._expect != DONE:
            raise JsonError("the document ends early", self._offset)

    def _fail(self, message: str, at: int) -> JsonError:
        return JsonError(message, self._offset + at)

    def _scan(self, buf: bytes, *, final: bool) -> None:
        i, n = 0, len(buf)
        while i < n:
            if self._in_string:
                i = self._string(buf, i, n)
                if i < 0:  # an escape cut by the end of the chunk
                    i = -i - 1
                    break
                continue
            i = _WS.match(buf, i).end()  # type: ignore[union-attr]
            if i == n:
                break
            c = buf[i]
            if self._expect == DONE:
                raise self._fail("data after the document", i)
            if c == 0x22:  # "
                self._open_string(i)
                i += 1
            elif c in b"{[":
                if self._expect not in (VALUE, VALUE_OR_CLOSE):
                    raise self._fail(f"unexpected {chr(c)!r}", i)
                if len(self._stack) >= MAX_DEPTH:
                    raise self._fail("nested too deeply", i)
                flat = _FLAT[c].match(buf, i) if self._stack else None
                if flat is not None:  # a whole container of scalars at once
                    self._begin_value(i, c)
                    i = flat.end()
                    self._end_value(i)
                    continue
                self._begin_value(i, c)
                self._stack.append(c)
                self._expect = KEY_OR_CLOSE if c == 0x7B else VALUE_OR_CLOSE
                i += 1
            elif c in b"}]":
                opener = 0x7B if c == 0x7D else 0x5B
                allowed = (
                    (KEY_OR_CLOSE, AFTER_VALUE) if c == 0x7D else (VALUE_OR_CLOSE, AFTER_VALUE)
                )
                if not self._stack or self._stack[-1] != opener or self._expect not in allowed:
                    raise self._fail(f"unexpected {chr(c)!r}", i)
                self._stack.pop()
                i += 1
                self._end_value(i)
            elif c == 0x2C:  # ,
                if self._expect != AFTER_VALUE or not self._stack:
                    raise self._fail("unexpected ','", i)
                i = self._fast_run(buf, i)
                if i < n and buf[i] == 0x2C:
                    self._expect = KEY if self._stack[-1] == 0x7B else VALUE
                    i += 1
            elif c == 0x3A:  # :
                if self._expect != COLON:
                    raise self._fail("unexpected ':'", i)
                self._expect = VALUE
                i += 1
            else:
                end = _SCALAR_RUN.match(buf, i).end()  # type: ignore[union-attr]
                if end - i > MAX_SCALAR:
                    raise self._fail("a number or literal too long", i)
                if end == n and not final:
                    break  # may go on in the next chunk
                self._scalar(buf[i:end], i)
                i = end
        self._offset += i
        self._pending = buf[i:]

    def _fast_run(self, buf: bytes, i: int) -> int:
        """Skip a run of simple items after a value, deeper than the member's own level."""
        if len(self._stack) < 2:
            return i  # the top-level object's own members go through key checks
        run = _ARRAY_RUN if self._stack[-1] == 0x5B else _OBJECT_RUN
        return run.match(buf, i).end()  # type: ignore[union-attr]

    def _scalar(self, token: bytes, at: int) -> None:
        if self._expect not in (VALUE, VALUE_OR_CLOSE):
            raise self._fail("unexpected value", at)
        if token not in _LITERALS and not _NUMBER.fullmatch(token):
            raise self._fail(f"not a JSON value: {token[:40]!r}", at)
        self._begin_value(at, token[0])
        self._end_value(at + len(token))

    def _open_string(self, at: int) -> None:
        if self._expect in (VALUE, VALUE_OR_CLOSE):
            self._begin_value(at, 0x22)
            self._string_is_key = False
        elif self._expect in (KEY, KEY_OR_CLOSE):
            self._string_is_key = True
            self._key = bytearray() if len(self._stack) == 1 else None
        else:
            raise self._fail("unexpected string", at)
        self._in_string = True

    def _string(self, buf: bytes, i: int, n: int) -> int:
        """Scan inside a string from ``i``; the index after what was consumed, or ``-(i+1)``
        when an escape is cut at ``i`` by the end of the chunk."""
        j = _STRING_RUN.match(buf, i).end()  # type: ignore[union-attr]
        self._collect(buf, i, j)
        if j == n:
            return n
        c = buf[j]
        if c == 0x22:
            self._in_string = False
            self._close_string(j + 1)
            return j + 1
        if c == 0x5C:  # backslash
            if j + 1 >= n:
                return -(j + 1)
            e = buf[j + 1]
            if e == 0x75:  # \uXXXX
                if j + 6 > n:
                    return -(j + 1)
                if not _HEX4.fullmatch(buf, j + 2, j + 6):
                    raise self._fail("bad \\u escape", j)
                self._collect(buf, j, j + 6)
                return j + 6
            if e not in _ESCAPES:
                raise self._fail("bad escape", j)
            self._collect(buf, j, j + 2)
            return j + 2
        raise self._fail("control character in a string", j)

    def _collect(self, buf: bytes, i: int, j: int) -> None:
        if self._key is not None and j > i:
            if len(self._key) + (j - i) > _MAX_KEY:
                self._key = None  # too long to be the member's name
            else:
                self._key += buf[i:j]

    def _close_string(self, end: int) -> None:
        if not self._string_is_key:
            self._end_value(end)
            return
        self._expect = COLON
        if len(self._stack) == 1:
            name = None
            if self._key is not None:
                name = json.loads(b'"' + bytes(self._key) + b'"')
            self._member_next = name == self.member
        self._key = None

    def _begin_value(self, at: int, first: int) -> None:
        if not self._stack:
            self.is_object = first == 0x7B
        if len(self._stack) == 1 and self._stack[0] == 0x7B and self._member_next:
            self.value_start, self.value_end = self._offset + at, None
            self._capturing = True
        self._member_next = False

    def _end_value(self, end: int) -> None:
        if self._capturing and len(self._stack) == 1:
            self.value_end = self._offset + end
            self._capturing = False
        self._expect = AFTER_VALUE if self._stack else DONE
