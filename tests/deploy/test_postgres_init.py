"""deploy/k8s/base/postgres/init-databases.sh against a real PostgreSQL
(CROSSDOCK_TEST_PG_URL): one role and one database per service, each role
confined to its own database, idempotent (it is run again to add a service)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import K8S

SCRIPT = K8S / "base" / "postgres" / "init-databases.sh"
PG_URL = os.environ.get("CROSSDOCK_TEST_PG_URL", "")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not PG_URL, reason="CROSSDOCK_TEST_PG_URL not set"),
    pytest.mark.skipif(not shutil.which("psql"), reason="psql not installed"),
]


def pg_env(url: str) -> tuple[dict[str, str], str]:
    u = urlsplit(url)
    env = {**os.environ, "PGHOST": u.hostname or "127.0.0.1", "PGPORT": str(u.port or 5432),
           "PGDATABASE": u.path.lstrip("/") or "postgres"}
    if u.password:
        env["PGPASSWORD"] = u.password
    return env, u.username or "postgres"


def psql(env: dict[str, str], user: str, db: str, sql: str, password: str | None = None):
    e = {**env, "PGDATABASE": db}
    if password is not None:
        e["PGPASSWORD"] = password
    return subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", user, "-tAc", sql],
                          capture_output=True, text=True, timeout=30, env=e)


def test_one_database_and_role_per_service(tmp_path: Path) -> None:
    env, admin = pg_env(PG_URL)
    prefix = f"cdtest_{uuid.uuid4().hex[:8]}_"
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "role-alpha").write_text("pw-alpha-1\n")
    (creds / "role-beta").write_text("pw-beta-1")
    (creds / "superuser-password").write_text("ignored")
    run_env = {**env, "POSTGRES_USER": admin, "CROSSDOCK_DB_CREDENTIALS": str(creds),
               "CROSSDOCK_DB_PREFIX": prefix}
    try:
        for _ in range(2):  # idempotent
            proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True,
                                  timeout=60, env=run_env)
            assert proc.returncode == 0, proc.stderr
        owners = psql(env, admin, "postgres",
                      f"SELECT datname || '=' || pg_get_userbyid(datdba) FROM pg_database "
                      f"WHERE datname LIKE '{prefix}%' ORDER BY 1")
        assert owners.stdout.split() == [f"{prefix}alpha={prefix}alpha", f"{prefix}beta={prefix}beta"]
        # A role may not connect to another service's database (connecting
        # over TCP uses the password where the server asks for one).
        own = psql(env, f"{prefix}alpha", f"{prefix}alpha", "CREATE TABLE t (x int); SELECT 1",
                   password="pw-alpha-1")
        assert own.returncode == 0, own.stderr
        other = psql(env, f"{prefix}alpha", f"{prefix}beta", "SELECT 1", password="pw-alpha-1")
        assert other.returncode != 0 and "permission denied" in other.stderr
    finally:
        for name in ("alpha", "beta"):
            psql(env, admin, "postgres", f'DROP DATABASE IF EXISTS "{prefix}{name}"')
            psql(env, admin, "postgres", f'DROP ROLE IF EXISTS "{prefix}{name}"')


def test_no_credentials_is_an_error(tmp_path: Path) -> None:
    env, admin = pg_env(PG_URL)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**env, "POSTGRES_USER": admin, "CROSSDOCK_DB_CREDENTIALS": str(tmp_path)})
    assert proc.returncode == 1 and "no role-<service> files" in proc.stderr
