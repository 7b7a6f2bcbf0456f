"""The one exception type for user mistakes, and the one way to quote another error in a single line."""

from __future__ import annotations


class ImgclsError(Exception):
    """A problem the user can fix; the message names the problem and the fix.

    The CLI prints it on one line and exits with status 2; anything else is a bug and keeps its traceback.
    """


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal after saving where it was; the exit status is 128 + the signal number.

    A KeyboardInterrupt, so that whatever cleans up after Ctrl-C cleans up after SIGTERM too."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def first_line(error: BaseException, limit: int = 160, last: bool = False) -> str:
    """The first (or `last`) non-empty line of an error's message, cut to `limit` characters; the error's type
    name when it has no message. Used to quote a library's error inside one of our one-line messages."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[-1] if last else lines[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(error: BaseException) -> str:
    """`TypeName: first line` of an error (why a file could not be read, in skipped.txt and the console)."""
    text = first_line(error)
    return type(error).__name__ if text == type(error).__name__ else f"{type(error).__name__}: {text}"
