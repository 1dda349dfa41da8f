"""The CLI reaches the mesh through its public APIs only (issue 12, item 5): it
imports neither the gateway nor a store, opens every channel through the
runtime's factory (rpc.Stubs), and its command modules are put together in one
place without reaching back into the package root."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "services" / "cli"
MODULES = sorted(p for p in CLI.glob("*.py") if p.name != "__main__.py")


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, level) of every import in a file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [a.name for a in node.names], node.level))
    return out


def test_no_command_reaches_into_the_gateway_or_a_store():
    forbidden = ("gateway", "sqlalchemy", "services.mesh.store", "fastapi", "uvicorn", "alembic")
    found = [(p.name, m) for p in MODULES for m, _, level in imports(p)
             if level == 0 and (m == "gateway" or m.startswith(forbidden))]
    assert not found, found


def test_every_channel_is_opened_by_the_runtimes_factory():
    opened = [(p.name, node.lineno) for p in MODULES for node in ast.walk(ast.parse(p.read_text()))
              if isinstance(node, ast.Attribute) and node.attr in ("insecure_channel", "secure_channel")]
    assert not opened, opened
    assert "client_channel" in (CLI / "rpc.py").read_text()


def test_command_modules_do_not_reach_back_into_the_package_root():
    back = [(p.name, m, names) for p in MODULES if p.name != "__init__.py"
            for m, names, level in imports(p)
            if (level == 1 and m == "" and {"app", "console", "main"} & set(names))
            or (level == 0 and m == "services.cli")]
    assert not back, back
    assert "noqa: E402" not in (CLI / "__init__.py").read_text()


def test_starting_the_cli_loads_no_web_framework_nor_database_layer():
    code = ("import sys, services.cli; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'fastapi', 'uvicorn', 'starlette', 'sqlalchemy', 'gateway', 'alembic', 'aiosqlite'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
