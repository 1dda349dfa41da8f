"""Tryton for the tests: a prepared template database (modules activated and set up
once, then kept under .data/tryton-template, keyed by what shapes it), copied for each
test's trytond, so that no test waits for module activation."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import trytond

from services.erp.tryton import server as tryton_server
from services.erp.tryton.server import TrytonServer

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "services" / "erp" / "tryton"


def template_key() -> str:
    """What the template depends on: trytond's version, the module and the set-up."""
    h = hashlib.sha256(trytond.__version__.encode())
    for path in sorted([*(MODULE / "module").glob("*.py"), MODULE / "module" / "tryton.cfg", MODULE / "setup.py"]):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def tryton_template() -> Path:
    """The template SQLite file, made once (about 20 s to minutes on a loaded machine)."""
    folder = Path(os.environ.get("CROSSDOCK_TRYTON_TEMPLATE_DIR", ROOT / ".data" / "tryton-template"))
    template = folder / f"crossdock-{template_key()}.sqlite"
    if template.exists():
        return template
    work = folder / f"build-{os.getpid()}"
    server = TrytonServer(work)
    server.prepare()  # creates the database, activates the modules, sets it up
    tmp = template.with_suffix(".tmp")
    with sqlite3.connect(server.sqlite_file) as src, sqlite3.connect(tmp) as dst:
        src.backup(dst)  # one self-contained file (no WAL beside it)
    tmp.replace(template)
    return template


def start_tryton(data_dir: Path, **kw) -> TrytonServer:
    server = TrytonServer(data_dir, template=tryton_template(), **kw)
    server.prepare()
    server.start()
    return server


def tryton_env(server: TrytonServer) -> dict[str, str]:
    """The environment of an ERP service on this trytond."""
    return {"CROSSDOCK_ERP_BACKEND": "tryton", "CROSSDOCK_ERP_TRYTON_URL": server.url,
            "CROSSDOCK_ERP_TRYTON_FEED_INTERVAL": "0.2"}


__all__ = ["start_tryton", "tryton_env", "tryton_template", "tryton_server"]
