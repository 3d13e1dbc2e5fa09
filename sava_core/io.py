"""Atomic file writes (a reader, or a crash, never sees a half-written file) and the check that a
user-supplied input is a regular file."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sava_core.errors import SavaError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def canonical_hash(data: Any) -> str:
    """sha256 of the canonical JSON of ``data`` (sorted keys), first 16 hex digits: a stable key."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Let ``writer(tmp_path)`` produce the file (e.g. ``safetensors.torch.save_file``), then publish it."""
    with atomic_path(path) as tmp:
        writer(tmp)


_FILE_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def not_regular(path: str | Path) -> str | None:
    """None when ``path`` (symlinks followed) is a regular file; else what it is instead: "missing",
    "a directory", "a character device" (e.g. /dev/zero), "a block device", "a named pipe", "a socket",
    or "unreadable (<reason>)". Checked before a file is opened, so a device is never read."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _FILE_TYPES if test(mode)), "a special file")


def require_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a Path if it is a regular file (symlinks followed); else a SavaError naming it and
    what it is (``what`` names the role, e.g. "manifest")."""
    kind = not_regular(path)
    if kind == "missing":
        raise SavaError(f"{what} {path} not found; give the path of an existing file")
    if kind is not None:
        raise SavaError(f"{what} {path} is not a regular file ({kind}); give a file")
    return Path(path)
