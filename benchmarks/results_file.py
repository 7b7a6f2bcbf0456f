"""Write one benchmark's section into docs/benchmarks.md, replacing that section from an earlier run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def command_line() -> str:
    """How this benchmark was started, ready to paste: `python benchmarks/NAME.py ARGS`, shell-quoted."""
    return shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def replace_section(out: Path, marker: str, text: str) -> None:
    """Put `text` (starting with the `marker` heading) in `out`, where an older version of it was, else last."""
    out = Path(out)
    existing = out.read_text() if out.exists() else "# Benchmarks\n"
    if marker not in existing:
        out.write_text(existing.rstrip() + "\n\n" + text)
        return
    start = existing.index(marker)
    end = existing.find("\n## ", start + len(marker))
    after = existing[end + 1:] if end != -1 else ""
    out.write_text(existing[:start] + text.rstrip() + "\n" + ("\n" + after if after else ""))
