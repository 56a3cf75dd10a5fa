"""hydra.sdk stands alone: it imports httpx, anyio (httpx's own dependency) and the standard
library only, so an app imports it without torch, transformers or libp2p."""

import ast
import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[3] / "hydra" / "sdk"
ALLOWED = {"httpx", "anyio", "hydra"}


def test_its_modules_import_only_the_standard_library_httpx_and_itself() -> None:
    found = set()
    for path in SDK.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    ours = {name for name in found if name.split(".")[0] == "hydra"}
    assert all(name.startswith("hydra.sdk") for name in ours), ours
    outside = {name.split(".")[0] for name in found} - ALLOWED - set(sys.stdlib_module_names)
    assert not outside


def test_importing_it_loads_no_heavy_package() -> None:
    heavy = ("torch", "transformers", "libp2p", "trio", "quart", "numpy")
    code = f"import sys, hydra.sdk; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
