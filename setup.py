"""Build hook: generate the gRPC stubs from ``protos/`` whenever the package is built.

``pip install .`` writes them into the wheel and ``pip install -e .`` into the ignored
``grpc_api/_generated/``, so a clean clone needs no generated file in git. Imports among
the generated modules are rewritten to live under ``grpc_api._generated``, because the
proto package ``riverrun.v1`` would otherwise resolve to the ``riverrun`` shell package.
"""

from __future__ import annotations

import re
import tempfile
from importlib.resources import files
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTOS = ROOT / "protos"
PACKAGE = "grpc_api._generated"
HEADER = '"""Generated from protos/ by the build (setup.py); never edited or committed."""\n'


def generate_stubs(target: Path) -> None:
    """Compile every ``.proto`` under ``protos/`` into Python modules under ``target``."""
    from grpc_tools import protoc

    sources = sorted(str(p) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{files('grpc_tools') / '_proto'}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *sources,
        ]
        if protoc.main(argv) != 0:
            raise RuntimeError(f"protoc failed on {sources}")
        out = Path(tmp)
        packages = {".".join(p.relative_to(out).parent.parts) for p in out.rglob("*.py")}
        pattern = re.compile(rf"^from ({'|'.join(map(re.escape, packages))}) import", re.M)
        for path in out.rglob("*.py*"):
            dest = target / path.relative_to(out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(pattern.sub(rf"from {PACKAGE}.\1 import", path.read_text()))
        for folder in [target, *(p for p in target.rglob("*") if p.is_dir())]:
            (folder / "__init__.py").write_text(HEADER)


class BuildWithStubs(build_py):
    """``build_py`` that generates the stubs first (into the source tree when editable)."""

    def run(self) -> None:
        base = ROOT if self.editable_mode else Path(self.build_lib)
        generate_stubs(base / "grpc_api" / "_generated")
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
