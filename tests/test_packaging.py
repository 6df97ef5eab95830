"""Every package directory is listed in pyproject.toml, so a non-editable install ships it too,
and nothing claims a generic top-level name."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {
    "agent": "tagloop.agent",
    "tools": "tagloop.tools",
    "policies": "tagloop.policies",
    "evals": "tagloop.evals",
}


def test_every_package_directory_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, dotted in MAPPED.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([dotted, *rel.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "listed packages without a directory"
    assert all(name.startswith("tagloop.") for name in listed)
    assert config["package-dir"] == {v: k for k, v in MAPPED.items()}
