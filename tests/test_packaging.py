"""Packaging: what `pip install .` alone must bring for `import fbmarket` to work.

pyproject.toml's `[project].dependencies` is what a plain install gets; requirements.txt is the
pinned lock the README installs. Both must cover every third-party module the package imports,
or `pip install .` installs a package that cannot import (issue 10).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import fbmarket

ROOT = Path(__file__).resolve().parents[1]

# Import name -> distribution name, where the two differ.
DISTRIBUTION = {
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "faiss": "faiss-cpu",
    "price_parser": "price-parser",
    "prometheus_client": "prometheus-client",
    "sqlalchemy": "sqlalchemy",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normal(re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0])


def _imported_top_levels() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "fbmarket").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "fbmarket"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_requirement_name(r) for r in project["dependencies"]}


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = _declared()
    missing = sorted(
        module for module in _imported_top_levels() if _normal(DISTRIBUTION.get(module, module)) not in declared
    )
    assert not missing, f"imported by fbmarket/ but not in [project].dependencies: {missing}"


def test_declared_dependencies_are_pinned_in_the_lock() -> None:
    pinned = {
        _requirement_name(line)
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    assert _declared() <= pinned, f"declared but not pinned in requirements.txt: {_declared() - pinned}"


def test_one_version_source() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fbmarket.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", fbmarket.__version__)


def test_test_tools_are_an_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"pytest", "hypothesis", "httpx"} <= {_requirement_name(r) for r in extras["test"]}
