"""Dependencies point one way: the shell depends on flows and grpc_api, which depend on models."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "models": {"bytewax", "confluent_kafka", "grpc", "flows", "grpc_api", "riverrun"},
    "flows": {"grpc", "grpc_api"},
    "grpc_api": {"flows", "bytewax"},  # siblings of flows: Kafka only through confluent_kafka
}
# flows and grpc_api may read the shared settings and metrics, and start children that end
# with their parent (riverrun.deathsig, stdlib only), nothing else of the shell.
SHELL_LEAVES = {"riverrun.settings", "riverrun.metrics", "riverrun.deathsig"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["models", "flows", "grpc_api"])
def test_package_imports_point_one_way(package: str) -> None:
    paths = list((ROOT / package).rglob("*.py"))
    assert paths, f"no modules found in {ROOT / package}"
    for path in paths:
        if "_generated" in path.parts:
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN.get(package, set()), f"{path} imports {name}"
            if top == "riverrun":
                assert name in SHELL_LEAVES, f"{path} imports {name} from the shell"
