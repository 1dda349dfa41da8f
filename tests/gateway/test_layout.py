"""The experience layer is the top-level ``gateway/`` package (design: "Suggested
layout"), run as ``python -m gateway`` on the shared runtime in services/mesh."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_gateway_is_a_top_level_package_beside_services():
    import gateway
    import gateway.__main__ as main

    assert Path(gateway.__file__).resolve().parent == ROOT / "gateway"
    assert not (ROOT / "services" / "gateway").exists()
    # It keeps using the shared runtime.
    assert main.run.__module__ == "services.mesh.app"


@pytest.mark.e2e
def test_the_launcher_runs_python_dash_m_gateway(gw_mesh):
    proc = gw_mesh.services["gateway"].proc
    assert proc is not None and proc.poll() is None
    argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert argv[1:3] == [b"-m", b"gateway"], argv
