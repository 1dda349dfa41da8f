"""Autogenerate a migration for one service: `make migration SERVICE=erp MSG="add x"`.

Upgrades a scratch SQLite database to the current head, then compares it with
the service's tables and writes the difference as a new revision.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from services.mesh.store import migrate


def main(service: str, message: str) -> None:
    package = "gateway" if service == "gateway" else f"services.{service}"  # gateway/ is top-level
    importlib.import_module(f"{package}.store")
    migrations = Path(*package.split(".")) / "migrations"
    (migrations / "versions").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/scratch.db"
        migrate(url, migrations)
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations))
        cfg.set_main_option("sqlalchemy.url", url)
        count = len(list((migrations / "versions").glob("*.py")))
        command.revision(cfg, message=message, autogenerate=True, rev_id=f"{count + 1:04d}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
