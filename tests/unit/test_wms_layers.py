"""The WMS's modules import one way (entry points -> use cases -> stock -> replenishment
rules -> pure rules and tables), and no private name crosses a module."""

from __future__ import annotations

import ast
from pathlib import Path

import services.wms

PACKAGE = Path(services.wms.__file__).parent
# Each module may import only modules of a lower layer.
LAYERS = [
    {"store", "statuses", "domain", "tracing"},
    {"fulfilment_rules", "replenishment", "replicas"},
    {"stock"},
    {"fulfilment", "returns"},
    {"stock_commands"},
    {"autopilot"},
    {"handlers", "grpc_api"},
    {"__main__"},
]
LAYER = {module: n for n, modules in enumerate(LAYERS) for module in modules}


def _wms_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) of a module's package-relative imports."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [alias.name for alias in node.names]
            if node.module:
                out.append((node.module.split(".")[0], names))
            else:
                out.extend((name, []) for name in names)
    return out


def test_every_module_has_a_layer():
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"} == set(LAYER)


def test_imports_run_one_way():
    not_down = [(path.stem, module) for path in PACKAGE.glob("*.py") if path.stem in LAYER
                for module, _ in _wms_imports(path) if LAYER[module] >= LAYER[path.stem]]
    assert not_down == []


def test_no_private_name_crosses_a_module():
    crossing = []
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        crossing += [(path.stem, name) for _, names in _wms_imports(path) for name in names
                     if name.startswith("_")]
        crossing += [(path.stem, f"{node.value.id}.{node.attr}") for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                     and node.value.id in LAYER and node.attr.startswith("_")]
    assert crossing == []
