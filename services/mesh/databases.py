"""One PostgreSQL database per service on one server, for `crossdock up --postgres URL`.

Every service owns its store (docs: design.md), so one ``CROSSDOCK_DATABASE_URL`` shared by
all of them would put every service's tables, and one ``alembic_version``, in one database.
Given a server (``postgresql://postgres@127.0.0.1:5432/``; a database in the URL is only the
one connected to for CREATE DATABASE, ``postgres`` when none), this creates what is missing
of ``<prefix>_erp``, ``<prefix>_wms``, ... and returns each service's URL; every service then
migrates its own database at start, as on SQLite.
"""

from __future__ import annotations

import re

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from .config import SERVICES
from .store import sync_url

DEFAULT_PREFIX = "crossdock"
_PREFIX = re.compile(r"^[a-z_][a-z0-9_]*$")
_MAX_NAME = 63  # PostgreSQL's identifier length


class DatabaseServerError(RuntimeError):
    """The server could not be reached or refused (the message names it, without a password)."""


def database_name(prefix: str, service: str) -> str:
    if not _PREFIX.match(prefix):
        raise ValueError(f"database prefix {prefix!r}: lower-case letters, digits and _ only")
    name = f"{prefix}_{service}"
    if len(name) > _MAX_NAME:
        raise ValueError(f"database name {name!r} is longer than {_MAX_NAME} characters")
    return name


def _server(server_url: str):
    url = make_url(server_url)
    if not url.drivername.startswith("postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url.render_as_string(hide_password=True)}")
    admin = url.set(database=url.database or "postgres")
    engine = create_engine(sync_url(admin.render_as_string(hide_password=False)),
                           isolation_level="AUTOCOMMIT", pool_pre_ping=False)
    return url, engine


def _connect(engine, url):
    try:
        return engine.connect()
    except OperationalError as exc:
        raise DatabaseServerError(
            f"PostgreSQL at {url.render_as_string(hide_password=True)}: {exc.orig}") from exc


def service_databases(server_url: str, prefix: str = DEFAULT_PREFIX,
                      services: tuple[str, ...] = SERVICES) -> dict[str, str]:
    """Create the missing service databases on the server; service -> its database URL."""
    url, engine = _server(server_url)
    urls = {}
    try:
        with _connect(engine, url) as conn:
            for service in services:
                name = database_name(prefix, service)
                exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                      {"n": name}).first()
                if not exists:
                    try:
                        conn.execute(text(f'CREATE DATABASE "{name}"'))
                    except ProgrammingError as exc:  # created meanwhile by another launcher
                        if "already exists" not in str(exc):
                            raise
                urls[service] = url.set(database=name).render_as_string(hide_password=False)
    finally:
        engine.dispose()
    return urls


def drop_service_databases(server_url: str, prefix: str = DEFAULT_PREFIX,
                           services: tuple[str, ...] = SERVICES) -> None:
    """Drop the service databases (``crossdock up --fresh``, tests), disconnecting their users."""
    url, engine = _server(server_url)
    try:
        with _connect(engine, url) as conn:
            for service in services:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database_name(prefix, service)}" WITH (FORCE)'))
    finally:
        engine.dispose()
