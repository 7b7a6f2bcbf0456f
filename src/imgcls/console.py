"""The shared terminal: one rich console, quiet on non-main processes."""

from __future__ import annotations

from functools import lru_cache

from rich.console import Console

_QUIET = [False]  # set by the engine once the process knows it is not the main one of a distributed job


def quiet_unless_main(is_main_process: bool) -> None:
    """Under torchrun / accelerate launch only the main process prints; the others print errors alone."""
    _QUIET[0] = not is_main_process
    get_console().quiet = _QUIET[0]
    get_error_console().quiet = _QUIET[0]


@lru_cache(maxsize=1)
def get_console():
    """The rich Console all of imgcls prints through (stderr stays free for errors)."""
    return Console(highlight=False, soft_wrap=True, quiet=_QUIET[0])


@lru_cache(maxsize=1)
def get_error_console():
    """The console for warnings and notes, on stderr, so stdout stays clean for JSON/CSV output."""
    return Console(highlight=False, soft_wrap=True, stderr=True, quiet=_QUIET[0])


def warn(message: str) -> None:
    """Print a one-line warning."""
    get_error_console().print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)


def info(message: str) -> None:
    """Print a one-line note (on stderr, like warnings)."""
    get_error_console().print(message)
