"""Secrets made on first use and kept in a file readable by its owner only (one
machine: the data folder; Kubernetes gives them as Secrets instead).

``create_once`` writes the whole value to a temporary file (mode 0600, fsynced)
and links it into place: a concurrent reader sees no file or the whole value,
never a half-written one, and the first process to start wins.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def create_once(path: Path, make: Callable[[], str]) -> str:
    """The value in ``path``, made by ``make()`` when the file does not exist yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, make().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
