"""The one exception type users see: a full sentence naming the bad value and the fix."""

from __future__ import annotations

import re

_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Exit|Interrupt|Warning)):?(?: (.*))?$")


class HwsearchError(Exception):
    """A user-facing error. The CLI prints its message on one line and exits with status 2."""


def error_line(text: str, limit: int = 600) -> str:
    """The one line of a traceback text that says what went wrong (a remote worker's, as Ray hands it
    back): its last ``Type: message`` line, just the message for an :class:`HwsearchError`; else its first line."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    for line in reversed(lines):
        m = _ERROR_LINE.match(line)
        if m:
            out = m.group(2) if m.group(1) == "HwsearchError" and m.group(2) else f"{m.group(1)}: {m.group(2) or ''}".rstrip(": ")
            return out[:limit]
    return (lines[0] if lines else "")[:limit]
