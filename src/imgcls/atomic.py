"""Atomic file writes: a temporary name in the same folder, then a rename, so no reader sees half a file."""

from __future__ import annotations

import errno
import json
import os
import shutil
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
    except Exception as error:
        full = disk_full(error, path.parent)
        tmp_path.unlink(missing_ok=True)
        if full:
            raise ImgclsError(no_space_message(path)) from None
        raise
    except BaseException:  # Ctrl-C: no half-written file is left either
        tmp_path.unlink(missing_ok=True)
        raise


LOW_SPACE = 1 << 20  # bytes: a write that failed with less than this free failed for want of space


def disk_full(error: BaseException, folder: Path) -> bool:
    """Whether a failed write failed because the disk is full. torch.save says only "unexpected pos", so the
    free space is asked too (before the caller removes its partial file)."""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error):
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


def no_space_message(path: Path) -> str:
    return f"no space left on the device writing {path}; free space there (or choose another folder) and try again"


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
