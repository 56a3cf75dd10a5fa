"""The layer table in the README's Architecture section is the truth: every folder and top-level
module is in it, nothing else is, and no module imports from a layer above its own."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^(\d+)\s+(\S+)\s+\S")


def layer_table() -> dict[str, int]:
    """``{"hydra.dht": 3, "hydra.config": 7, ...}`` from the README's first table after
    ``## Architecture``."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Architecture") :]
    block = section[section.index("```\nlayer") : section.index("```", section.index("```") + 3)]
    table = {}
    for line in block.splitlines()[2:]:
        match = ROW.match(line)
        assert match, f"unreadable row in the README's layer table: {line!r}"
        path = match[2].removesuffix("/").removesuffix(".py")
        table[path.replace("/", ".")] = int(match[1])
    return table


def source_modules() -> dict[str, Path]:
    """Every module of the shipped packages, by dotted name."""
    modules = {}
    for package in ("hydra", "protocols", "bootstrap"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def layer_of(module: str, table: dict[str, int]) -> int | None:
    """The layer of the longest table entry containing ``module``; ``hydra`` itself (the
    package's ``__init__``: a version string) sits at the bottom."""
    while module:
        if module in table:
            return table[module]
        if module == "hydra":
            return 0
        module = module.rpartition(".")[0]
    return None


def imported(path: Path) -> set[str]:
    """Modules of ours that ``path`` imports, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in ("hydra", "protocols", "bootstrap")}


def test_the_table_lists_exactly_the_folders_and_top_level_modules() -> None:
    table = layer_table()
    on_disk = {"protocols", "bootstrap"}
    on_disk |= {f"hydra.{p.name}" for p in (ROOT / "hydra").iterdir() if (p / "__init__.py").is_file()}
    on_disk |= {f"hydra.{p.stem}" for p in (ROOT / "hydra").glob("*.py") if p.stem != "__init__"}
    assert set(table) == on_disk


@pytest.mark.parametrize("module", sorted(source_modules()))
def test_no_module_imports_from_a_higher_layer(module: str) -> None:
    table = layer_table()
    own = layer_of(module, table)
    assert own is not None, f"{module} is in no layer of the README's table"
    upward = {name: layer_of(name, table) for name in imported(source_modules()[module])}
    upward = {name: layer for name, layer in upward.items() if layer is None or layer > own}
    assert not upward, f"{module} (layer {own}) imports from above: {upward}"
