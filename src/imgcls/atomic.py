"""Atomic file writes: a temporary name in the same folder, then a rename, so no reader sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from imgcls.errors import ImgclsError


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and rename the result onto `path`; the temporary file is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file atomically."""
    write_atomic(path, lambda tmp: _write_text(tmp, text))


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON atomically (NaN is not valid JSON, so callers store undefined numbers as null)."""
    write_text_atomic(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def check_replaceable(path: Path, option: str) -> None:
    """Refuse to overwrite a file imgcls did not write (our HTML and PNG files name imgcls in their header)."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_file():
        with path.open("rb") as handle:
            if b"imgcls" in handle.read(4096):
                return
    raise ImgclsError(f"{path} exists and was not written by imgcls; choose another {option} or move it away")


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)
