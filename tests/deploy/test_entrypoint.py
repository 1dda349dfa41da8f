"""The image's entrypoint (deploy/docker/entrypoint.py): Secrets mounted as
files become environment variables, NATS credentials go into the NATS URL,
and the argument picks the service."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.py"


def load():
    spec = importlib.util.spec_from_file_location("crossdock_entrypoint", ENTRYPOINT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ep = load()


def secrets_dir(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    # What a Kubernetes secret volume looks like: ..data links next to the keys.
    data = folder / "..2026_11_27_14_00_00.000000001"
    data.mkdir()
    (folder / "..data").symlink_to(data.name)
    for name, value in files.items():
        (data / name).write_text(value)
        (folder / name).symlink_to(Path("..data") / name)
    return folder


def test_secret_files_become_variables_and_nats_credentials_join_the_url(tmp_path: Path) -> None:
    folder = secrets_dir(
        tmp_path,
        CROSSDOCK_DATABASE_URL="postgresql://crossdock_erp:pw@postgres:5432/crossdock_erp\n",
        CROSSDOCK_NATS_USER="erp",
        CROSSDOCK_NATS_PASSWORD="s3cr3t-hex_0.~\n",
    )
    env = ep.prepare_environment({
        "CROSSDOCK_SECRETS_DIR": str(folder),
        "CROSSDOCK_NATS_URL": "nats://nats:4222",
        "CROSSDOCK_DATABASE_URL": "sqlite:///overridden.db",
    })
    assert env["CROSSDOCK_DATABASE_URL"] == "postgresql://crossdock_erp:pw@postgres:5432/crossdock_erp"
    assert env["CROSSDOCK_NATS_URL"] == "nats://erp:s3cr3t-hex_0.~@nats:4222"
    assert "..data" not in env and env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_every_url_of_a_list_gets_the_credentials_once() -> None:
    url = ep.with_nats_credentials("nats://a:4222, nats://b:4222,nats://x:y@c:4222", "u", "p")
    assert url == "nats://u:p@a:4222,nats://u:p@b:4222,nats://x:y@c:4222"


@pytest.mark.parametrize("password", ["with space", "p@ss", "a:b", "per%cent", ""])
def test_passwords_the_nats_client_would_misread_are_refused(password: str) -> None:
    with pytest.raises(ep.EntrypointError):
        ep.with_nats_credentials("nats://nats:4222", "erp", password)


def test_user_without_password_is_refused() -> None:
    with pytest.raises(ep.EntrypointError, match="both"):
        ep.prepare_environment({"CROSSDOCK_SECRETS_DIR": "/nonexistent", "CROSSDOCK_NATS_USER": "erp"})


def test_no_secrets_folder_changes_nothing() -> None:
    env = ep.prepare_environment({"CROSSDOCK_SECRETS_DIR": "/nonexistent", "X": "1"})
    assert env["X"] == "1" and "CROSSDOCK_NATS_URL" not in env


def test_the_argument_picks_the_service_or_a_command() -> None:
    for service in ("erp", "wms", "tms", "ordertoship"):
        assert ep.command_for([service]) == [sys.executable, "-m", f"services.{service}"]
    # The experience layer is the top-level gateway/ package.
    assert ep.command_for(["gateway"]) == [sys.executable, "-m", "gateway"]
    assert ep.command_for(["crossdock", "orders"]) == ["crossdock", "orders"]
    with pytest.raises(ep.EntrypointError, match="erp"):
        ep.command_for([])


def test_it_execs_the_command_with_the_prepared_environment(tmp_path: Path) -> None:
    folder = secrets_dir(tmp_path, CROSSDOCK_NATS_USER="tms", CROSSDOCK_NATS_PASSWORD="pw")
    proc = subprocess.run(
        [sys.executable, str(ENTRYPOINT), sys.executable, "-c",
         "import os; print(os.environ['CROSSDOCK_NATS_URL'])"],
        capture_output=True, text=True, timeout=30,
        env={"CROSSDOCK_SECRETS_DIR": str(folder), "CROSSDOCK_NATS_URL": "nats://nats:4222",
             "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "nats://tms:pw@nats:4222"
    usage = subprocess.run([sys.executable, str(ENTRYPOINT), "--help"],
                           capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "ordertoship" in usage.stderr
