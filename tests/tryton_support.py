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
    for path in sorted([*(MODULE / "module").glob("*.py"), MODULE / "module" / "tryton.cfg",
                        MODULE / "setup.py"]):
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


def pg_tryton_template(base_url: str, data_dir: Path) -> str:
    """A prepared Tryton database on PostgreSQL (made once per server and template key:
    minutes), for ``CREATE DATABASE ... TEMPLATE``; its name."""
    name = f"crossdock_tryton_tpl_{template_key()}"
    if TrytonServer(data_dir, database=name, database_url=base_url).exists():
        return name
    build = TrytonServer(data_dir, database=f"{name}_build", database_url=base_url)
    conn = build._pg()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}_build" WITH (FORCE)')
    build.prepare()  # creates it, activates the modules, sets it up
    with conn.cursor() as cur:  # complete: only now under the name the tests look for
        cur.execute(f'ALTER DATABASE "{name}_build" RENAME TO "{name}"')
    conn.close()
    return name


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
