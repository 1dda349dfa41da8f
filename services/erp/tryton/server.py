"""Tryton as its own server process, as an on-premises ERP runs: trytond's WSGI
application (``trytond.application:app``) under gunicorn with a few worker processes,
on its own database (a SQLite file by default, PostgreSQL when a URL is given).

``TrytonServer.prepare()`` creates the database when it is missing (from a prepared
template file when one is given: the fast way, no module activation), activates the
modules Crossdock needs (``setup.MODULES``, once) and runs the idempotent set-up
(``setup.py``); ``start()`` serves it and waits until it answers JSON-RPC.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from sqlalchemy.engine import make_url

from services.mesh.launcher import free_port, terminate, wait_until

from . import setup as tryton_setup

ADMIN_PASSWORD = "admin"  # Tryton's own admin: set-up only, on loopback


def default_workers(database_url: str = "") -> int:
    """PostgreSQL: two per core, at most 4 (Tryton is CPU-bound ORM work). SQLite: one
    (it has one writer at a time anyway, and the crossdock_outbox module relies on it to
    make Tryton's table locks moot; see module/__init__.py)."""
    if not database_url:
        return 1
    return max(1, min(4, 2 * (os.cpu_count() or 1)))


class TrytonServer:
    def __init__(
        self,
        data_dir: Path,
        *,
        database: str = "crossdock",
        database_url: str = "",
        port: int = 0,
        workers: int = 0,
        template: Path | None = None,
        password: str = "crossdock-erp",
        pg_template: str = "",
    ) -> None:
        self.dir = Path(data_dir).resolve() / "tryton"
        self.database = database
        self.database_url = database_url
        self.port = port
        self.workers = workers or default_workers(database_url)
        self.template = template
        # PostgreSQL: a prepared database to copy (CREATE DATABASE ... TEMPLATE) instead
        # of activating the modules.
        self.pg_template = pg_template
        self.password = password
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(data_dir).resolve() / "logs" / "trytond.log"

    # ---- configuration ----

    @property
    def config_path(self) -> Path:
        return self.dir / "trytond.conf"

    @property
    def sqlite_file(self) -> Path:
        return self.dir / f"{self.database}.sqlite"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.database_url:
            u = make_url(self.database_url)
            uri = u.set(drivername="postgresql", database=None).render_as_string(hide_password=False)
            database = f"[database]\nuri = {uri}\n"
        else:
            database = f"[database]\nuri = sqlite://\npath = {self.dir}\n"
        self.config_path.write_text(
            database
            + "retry = 10\n"
            + "[session]\nmax_age = 2592000\ntimeout = 2592000\n"
            + "[cache]\nclean_timeout = 0\n"
            + "[password]\nlength = 4\nentropy = 0\n"
        )

    def _env(self) -> dict[str, str]:
        passfile = self.dir / "admin.pass"
        passfile.write_text(ADMIN_PASSWORD)
        return {
            **os.environ,
            "TRYTOND_CONFIG": str(self.config_path),
            "TRYTONPASSFILE": str(passfile),
            "CROSSDOCK_ERP_TRYTON_PASSWORD": self.password,
            "PYTHONUNBUFFERED": "1",
        }

    def _run(self, *args: str, timeout: float = 900) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            subprocess.run(
                list(args),
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=timeout,
                cwd=Path(__file__).resolve().parents[3],
            )

    def _admin(self, *args: str) -> None:
        self._run(
            str(Path(sys.executable).parent / "trytond-admin"),
            "-c",
            str(self.config_path),
            "-d",
            self.database,
            *args,
        )

    # ---- lifecycle ----

    def exists(self) -> bool:
        if not self.database_url:
            return self.sqlite_file.exists() and self.sqlite_file.stat().st_size > 0
        import psycopg2

        u = make_url(self.database_url)
        conn = psycopg2.connect(
            host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname="postgres"
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    def _pg(self):
        import psycopg2

        u = make_url(self.database_url)
        conn = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                                dbname="postgres")
        conn.autocommit = True
        return conn

    def create(self) -> None:
        """An empty database with Crossdock's modules activated (the slow part: ~20 s on
        SQLite, minutes on PostgreSQL)."""
        if self.database_url and self.pg_template:
            conn = self._pg()
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.database}" TEMPLATE "{self.pg_template}"')
            conn.close()
            return
        if self.database_url:
            import psycopg2

            u = make_url(self.database_url)
            conn = psycopg2.connect(
                host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname="postgres"
            )
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.database}"')
            conn.close()
        else:
            self.sqlite_file.touch()
        self._admin("--all", "--email", "admin@crossdock.invalid")
        self._admin("-u", *tryton_setup.MODULES, "--activate-dependencies")

    def prepare(self) -> None:
        """Config, the database (template copy or a new one), then the idempotent set-up."""
        self._write_config()
        if not self.exists():
            if self.template is not None and not self.database_url:
                shutil.copyfile(self.template, self.sqlite_file)
                if _same_year(self.template):
                    return  # set up already (its fiscal year is this year's)
            else:
                self.create()
                if self.pg_template and self.database_url:
                    return  # a copy of a prepared (set-up) database
        self._run(sys.executable, "-m", "services.erp.tryton.setup", str(self.config_path), self.database)

    def start(self, timeout: float = 120) -> str:
        if not self.port:
            self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        env = {**self._env(), "TRYTOND_DATABASE_NAMES": self.database}
        self.proc = subprocess.Popen(
            [
                gunicorn,
                "--workers",
                str(self.workers),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--timeout",
                "300",
                "--graceful-timeout",
                "10",
                "--no-control-socket",
                "--preload",
                "trytond.application:app",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        try:
            wait_until(self.answers, timeout, "trytond to answer JSON-RPC", interval=0.2)
        except BaseException:
            self.kill()  # never left running behind a failed start
            raise
        return self.url

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"trytond exited with {self.proc.returncode}; see {self.log_path}")
        request = urllib.request.Request(
            self.url + "rpc/",
            data=json.dumps({"id": 0, "method": "common.server.version", "params": []}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return bool(json.loads(resp.read()).get("result"))
        except OSError:
            return False

    def stop(self, timeout: float = 15) -> None:
        terminate(self.proc, timeout)

    def kill(self) -> None:
        terminate(self.proc, 0)

    @property
    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


def _same_year(path: Path) -> bool:
    import datetime

    made = datetime.datetime.fromtimestamp(path.stat().st_mtime)
    return made.year == datetime.date.today().year


def main() -> None:
    """``python -m services.erp.tryton.server DATA_DIR [PORT]``: prepare and serve until killed."""
    server = TrytonServer(Path(sys.argv[1]), port=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    server.prepare()
    server.start()
    print(f"trytond serving {server.database} on {server.url}", flush=True)
    server.proc.wait()


if __name__ == "__main__":
    main()
