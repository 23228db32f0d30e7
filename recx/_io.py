"""Atomic file writes shared by checkpoints, indexes and run folders."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """Return the process umask (the permission bits new files lose)."""
    # os.umask can only be read by setting it, so set it back at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; written files get the
# permissions a plain open() would give them, so other users (a server
# account, say) can read models and bundles as usual.
_FILE_MODE = 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` only if the block succeeds.

    The temporary file lives in the same folder as ``path``, so the final
    ``os.replace`` is a rename within one file system and readers see either
    the old file or the complete new one, never a partial write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        with open(temporary_path, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary_path, _FILE_MODE)
        os.replace(temporary_path, target)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(payload)


def write_json_atomic(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as indented UTF-8 JSON to ``path`` atomically."""
    text = json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike[str], *, what: str) -> Any:
    """Read a JSON file, raising a clear error that names ``what`` it should hold."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} not found: {file} does not exist or is not a file.")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{what} at {file} is not valid UTF-8 JSON ({error}). The file may be truncated or was not written by recx.") from error
