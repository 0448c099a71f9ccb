"""Packaging: every third-party package poetwb imports is declared in pyproject.toml, nothing declared goes unused,
and the license file matches the declared license."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Declared but never imported by poetwb's own code, each for a reason:
INDIRECT = {
    "accelerate": "transformers' Trainer refuses to run without it, and transformers does not install it",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: list[str]) -> set[str]:
    return {_norm(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def _imported_modules(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"poetwb", "__future__"}


def _distributions(modules: set[str]) -> dict[str, str]:
    table = packages_distributions()
    unknown = {m for m in modules if m not in table}
    assert not unknown, f"imported but not installed here: {unknown}"
    return {m: _norm(table[m][0]) for m in modules}


def test_every_imported_package_is_declared_and_every_declared_one_is_used():
    declared = _declared(PYPROJECT["project"]["dependencies"])
    optional = _declared(PYPROJECT["project"]["optional-dependencies"]["llamacpp"])  # the optional engine's own
    used = _distributions(_imported_modules(ROOT / "poetwb"))
    missing = {m: d for m, d in used.items() if d not in declared | optional}
    assert not missing, f"imported by poetwb but not in [project] dependencies: {missing}"
    assert optional <= set(used.values()), "the llamacpp extra declares what poetwb never imports"
    unused = declared - set(used.values()) - set(INDIRECT)
    assert not unused, f"declared but never imported by poetwb: {unused}"


def test_test_imports_are_declared_as_dev_dependencies():
    declared = _declared(PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["dev"])
    used = _distributions(_imported_modules(ROOT / "tests") - {"conftest"})
    missing = {m: d for m, d in used.items() if d not in declared}
    assert not missing, f"imported by the tests but declared nowhere: {missing}"


def test_the_license_file_matches_the_declared_license_and_project_urls_exist():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    urls = PYPROJECT["project"]["urls"]
    assert urls and all(u.startswith("https://huggingface.co/") for u in urls.values())
    readme = (ROOT / "README.md").read_text()
    assert all(u in readme for u in urls.values()), "the README links what pyproject lists"
