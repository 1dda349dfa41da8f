"""The peers' venv, ``.venv-peers``, created on demand from requirements-peers.lock
(the same pattern as .venv-tools for checkov): Temporal and DBOS stay out of
requirements.lock. Installed once; the stamp (the lock's sha256) keeps it until
the lock changes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-peers"
LOCK = ROOT / "requirements-peers.lock"


class PeersUnavailable(RuntimeError):
    """The peers' venv could not be installed."""


def python() -> Path:
    """The peers' python (the venv installed first when missing or out of date)."""
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    stamp, py = VENV / ".stamp", VENV / "bin" / "python"
    if py.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return py
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r", str(LOCK)],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise PeersUnavailable(
                f"could not install .venv-peers ({' '.join(step[:3])} ...): {proc.stderr.strip()[-800:]}"
            )
    stamp.write_text(digest)
    return py


def temporal_cli() -> Path:
    return python().parent / "temporal"
