"""Server-sent events (the WHATWG event-stream rules). Pure.

Every provider streams SSE: OpenAI and Mistral send bare `data:` lines ending with `[DONE]`,
Anthropic names each event (`event: content_block_delta`), Gemini (`alt=sse`) sends bare `data:`
lines and ends by closing the connection.

`SSEReader` is what the worker uses: it takes body bytes as they arrive and returns every event
they complete, splitting the text at blank lines in one pass (C string operations) rather than
line by line in Python; an event that is one `data: ` line, nearly all of them, is taken as is,
and only the rest go through `SSEDecoder`'s per-line rules. `LineSplitter` + `SSEDecoder` are the
reference it is tested against (tests/test_provider_plumbing.py).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEEvent:
    event: str  # "message" when the stream names none
    data: str
    id: str = ""


class SSEDecoder:
    """Feed lines (without their line ending); an event comes out at each blank line."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id = ""

    def feed(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        # `retry` and unknown fields are ignored, as the spec says.
        return None

    def flush(self) -> SSEEvent | None:
        """At end of stream: an event whose blank line never came (some servers omit the last)."""
        return self._dispatch()

    @property
    def last_id(self) -> str:
        """The last `id` field seen: every later event carries it (the spec's last event ID)."""
        return self._id

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
        self._event = ""
        self._data = []
        return event


class LineSplitter:
    """Body bytes as they arrive -> whole lines without their ending (CRLF, LF or CR).

    UTF-8 is decoded incrementally, so a character split across two reads survives; a CR at
    the end of a read is held back in case the next read starts with its LF.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._rest = ""

    def feed(self, chunk: bytes) -> list[str]:
        text = self._rest + self._decoder.decode(chunk)
        held_cr = text.endswith("\r")
        if held_cr:
            text = text[:-1]
        *lines, rest = _LINE_END.split(text)
        self._rest = rest + "\r" if held_cr else rest
        return lines

    def flush(self) -> list[str]:
        """At end of body: the last line, if it had no line ending."""
        text = self._rest + self._decoder.decode(b"", final=True)
        self._rest = ""
        return [line for line in _LINE_END.split(text) if line] if text else []


def decode_lines(lines: list[str]) -> list[SSEEvent]:
    """All events of a complete stream (tests, recorded fixtures)."""
    decoder = SSEDecoder()
    events = [e for line in lines if (e := decoder.feed(line)) is not None]
    last = decoder.flush()
    return [*events, last] if last else events


class SSEReader:
    """Body bytes as they arrive -> the events they complete, all of a read in one pass.

    Same events as `LineSplitter` + `SSEDecoder` (CRLF, CR or LF endings, comments, named and
    multi-line events, a missing last blank line), but a read holding many events costs a few
    C-level splits and one `SSEEvent` each, not a Python call per line.
    """

    __slots__ = ("_decoder", "_rest", "_utf8")

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._decoder = SSEDecoder()  # the per-line rules, for events that are not one data line
        self._rest = ""  # text after the last blank line: an event still arriving

    def feed(self, data: bytes) -> list[SSEEvent]:
        text = self._rest + self._utf8.decode(data)
        held = ""
        if "\r" in text:
            # CR or CRLF endings become LF; a CR at the end is held back, as it may be the first
            # half of a CRLF whose LF comes with the next read.
            if text.endswith("\r"):
                text, held = text[:-1], "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        end = text.rfind("\n\n")
        if end < 0:
            self._rest = text + held
            return []
        self._rest = text[end + 2 :] + held
        return self._events(text[:end].split("\n\n"))

    def flush(self) -> list[SSEEvent]:
        """At end of body: an event whose blank line never came (some servers omit the last)."""
        text = self._rest + self._utf8.decode(b"", final=True)
        self._rest = ""
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        return self._events([text]) if text.strip("\n") else []

    def _events(self, blocks: list[str]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        decoder = self._decoder
        for block in blocks:
            if block.startswith("data: ") and "\n" not in block:
                events.append(SSEEvent("message", block[6:], decoder.last_id))
                continue
            # A block may start or end with a blank line of its own (three line endings in a
            # row), and flush's may hold several events: every blank line dispatches.
            for line in block.split("\n"):
                if (event := decoder.feed(line)) is not None:
                    events.append(event)
            if (event := decoder.feed("")) is not None:
                events.append(event)
        return events
