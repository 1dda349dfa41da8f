"""The Dockerfile cannot be built here (no Docker engine): check that it
stays consistent with the Makefile (same lock, same code generation, same
install), that the runtime is non-root and read-only friendly, and that the
build context (.dockerignore) holds exactly what it copies."""

from __future__ import annotations

import fnmatch
import re

from .conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
MAKEFILE = (REPO / "Makefile").read_text()
DOCKERIGNORE = (REPO / ".dockerignore").read_text()


def protoc_options(text: str) -> list[str]:
    m = re.search(r"grpc_tools\.protoc((?:\s+(?:-I\s+\S+|--\S+))+)", text)
    assert m, "no `python -m grpc_tools.protoc ...` line"
    return m.group(1).split()


def test_code_generation_is_the_makefiles() -> None:
    assert protoc_options(DOCKERFILE) == protoc_options(MAKEFILE)
    # The Makefile's PROTOS is `find proto -name '*.proto' | sort`.
    assert "find proto -name '*.proto'" in MAKEFILE
    assert "$(find proto -name '*.proto' | sort)" in DOCKERFILE


def test_install_is_the_makefiles() -> None:
    assert "pip install -q --disable-pip-version-check -r requirements.lock" in MAKEFILE
    assert re.search(r"pip install -r requirements\.lock", DOCKERFILE)
    assert "--no-deps --no-build-isolation -e ." in MAKEFILE
    assert "pip install --no-deps --no-build-isolation -e ." in DOCKERFILE
    assert "crossdock_gen.pth" in MAKEFILE and "crossdock_gen.pth" in DOCKERFILE


def runtime_stage() -> str:
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.M)
    assert len(stages) == 3, "builder and runtime stages"
    assert stages[1].split()[2] == "builder" and stages[2].split()[2] == "runtime"
    return stages[2]


def test_runtime_is_non_root_and_read_only_friendly() -> None:
    runtime = runtime_stage()
    user = re.findall(r"^USER (\S+)", runtime, re.M)
    assert user == ["10001:10001"], "a numeric non-root user (runAsNonRoot can verify it)"
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime
    assert "CROSSDOCK_DATA_DIR=/data" in runtime and 'VOLUME ["/data"]' in runtime
    assert "compileall" in DOCKERFILE, "bytecode compiled at build time"
    assert re.search(r'^ENTRYPOINT \["/opt/venv/bin/python", "/app/deploy/docker/entrypoint.py"\]',
                     runtime, re.M)
    assert not re.search(r"^RUN .*(apt-get|pip install)", runtime, re.M), "nothing installed at runtime"


def included(path: str) -> bool:
    """.dockerignore semantics (last matching rule wins)."""
    verdict = True
    for line in DOCKERIGNORE.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if (fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern + "/*")
                or pattern == "**"
                or (pattern.startswith("**/") and fnmatch.fnmatch(path.rsplit("/", 1)[-1],
                                                                   pattern[3:]))):
            verdict = negate
    return verdict


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    sources = [s for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, re.M)
               for s in line.split()[:-1]]
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path"
        assert included(source) and included(f"{source}/x.py" if (REPO / source).is_dir() else source)
    for excluded in (".venv/bin/python", ".git/config", "gen/crossdock/x.py", ".data/erp.db",
                     "tests/conftest.py", "deploy/k8s/base/kustomization.yaml", ".venv-tools/x",
                     "services/erp/__pycache__/x.pyc"):
        assert not included(excluded), f"{excluded} should not be in the build context"
