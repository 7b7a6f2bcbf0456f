"""The shared terminal: one rich console, quiet on non-main processes."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def get_console():
    """The rich Console all of imgcls prints through (stderr stays free for errors)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """Print a one-line warning."""
    get_console().print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)


def info(message: str) -> None:
    """Print a one-line status message."""
    get_console().print(message)
