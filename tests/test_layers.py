"""Imports point down only: stages/ imports the io layer, the errors, schemas/ and other stages;
the io layer and the errors import no stage and nothing of pipeline/; schemas/ imports nothing of
ours."""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
BELOW_PIPELINE = ("slimpipe.io", "slimpipe.errors", "slimpipe.schemas", "slimpipe.stages")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "slimpipe" or name.startswith("slimpipe.")}


def _within(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def test_imports_point_down():
    layers = {
        "stages": BELOW_PIPELINE,
        "pipeline/io": ("slimpipe.io", "slimpipe.errors", "slimpipe.schemas"),
        "schemas": (),
    }
    for folder, allowed in layers.items():
        files = sorted((ROOT / folder).rglob("*.py"))
        assert files, folder
        for path in files:
            upward = [name for name in _imports(path) if not _within(name, allowed)]
            assert not upward, (str(path.relative_to(ROOT)), upward)
    assert _imports(ROOT / "pipeline" / "errors.py") == set()
