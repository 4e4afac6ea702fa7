"""The one exception type users see: a full sentence naming the bad value and the fix."""


class HwsearchError(Exception):
    """A user-facing error. The CLI prints its message on one line and exits with status 2."""
