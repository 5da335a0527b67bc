"""The wheel is the product: built from the checkout, installed by plain pip into a fresh venv, it serves.

No editable install and no Makefile: the venv holds a copy of the package, the server runs from a
folder outside the checkout, and the official Inspector lists its tools over stdio.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.e2e.test_inspector import INSPECTOR, NODE_BIN, ROOT

pytestmark = pytest.mark.slow

TOOLS = {"remember", "recall", "recall_batch", "predict_next", "index_health", "supersede", "forget"}


def run(*command: str | Path, cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMX_", "PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, ROOT, cwd=dist)
    (built,) = dist.glob("emx_mcp-*.whl")
    return built


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_every_dependency_resolves_to_wheels_on_newer_pythons(
    wheel: Path, tmp_path: Path, version: str
) -> None:
    """requires-python has no upper bound: pip resolves the wheel and binary wheels of all it needs."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"emx_mcp-{wheel.name.split('-')[1]}.dist-info/METADATA").decode()
    declared = re.search(r"^Requires-Python: (.+)$", metadata, re.MULTILINE)
    assert declared is not None and SpecifierSet(declared.group(1)).contains(f"{version}.0"), declared
    report = tmp_path / "report.json"
    run(
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--python-version", version, "--only-binary=:all:", "--target", tmp_path / "t",
        "--report", report, wheel,
        cwd=tmp_path,
    )  # fmt: skip
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"emx-mcp", "torch", "faiss-cpu", "onnxruntime", "numba", "mcp"} <= names


def test_the_wheel_installs_into_a_fresh_venv_and_serves(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    run(base, "-m", "venv", venv, cwd=tmp_path)
    pip = venv / "bin" / "pip"
    # torch first, pinned to this machine's CPU build (any other spec pulls CUDA wheels); then
    # the wheel alone, its dependencies from the package index.
    run(pip, "install", "--quiet", "torch==2.13.0", cwd=tmp_path)
    run(pip, "install", "--quiet", wheel, cwd=tmp_path)

    python = venv / "bin" / "python"
    where = run(python, "-c", "import emx_mcp; print(emx_mcp.__file__)", cwd=tmp_path).strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT), where
    installed = json.loads(run(pip, "list", "--format", "json", cwd=tmp_path))
    emx = next(p for p in installed if p["name"] == "emx-mcp")
    assert "editable_project_location" not in emx, emx  # a copy, not a link to the checkout

    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}"}
    data = tmp_path / "data"
    server = [str(venv / "bin" / "emx-mcp"), "serve"]
    done = subprocess.run(
        [str(INSPECTOR), "--cli", "-e", f"EMX_DATA_DIR={data}", *server, "--method", "tools/list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert {t["name"] for t in json.loads(done.stdout)["tools"]} == TOOLS
