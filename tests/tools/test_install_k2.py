"""tools/install_k2.sh: the check, the wheelhouse route's errors, and a k2 built for another torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "install_k2.sh"
TORCH = torch.__version__.split("+")[0]


def _run(*args: str, python: str = sys.executable, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--python", python, *args], capture_output=True,
                          text=True, timeout=300, env=env)


def _python_with_fake_k2(tmp_path: Path, built_for: str) -> tuple[str, dict]:
    """This interpreter, but `import k2` finds a k2 that says it was built for torch ``built_for``."""
    pkg = tmp_path / "fake" / "k2"
    (pkg / "version").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "version" / "__init__.py").write_text("")
    (pkg / "version" / "__main__.py").write_text(
        f'print("k2 version: 0.0\\nPyTorch version used to build k2: {built_for}+cpu")\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake"))
    return sys.executable, env


def test_matching_k2_is_left_alone_and_proven():
    proc = _run("--check-only")
    assert proc.returncode == 0, proc.stderr
    assert f"built for torch {TORCH}) is already installed" in proc.stderr
    assert "k2 works: ctc_loss" in proc.stdout + proc.stderr


def test_k2_for_another_torch_is_named(tmp_path):
    python, env = _python_with_fake_k2(tmp_path, "2.9.0")
    proc = _run("--check-only", python=python, env=env)
    assert proc.returncode != 0
    assert f"k2 built for torch 2.9.0 does not match torch {TORCH}" in proc.stderr


def test_missing_wheelhouse_explains_the_other_routes(tmp_path):
    python, env = _python_with_fake_k2(tmp_path, "2.9.0")
    proc = _run("--wheelhouse", str(tmp_path / "no-wheels"), python=python, env=env)
    assert proc.returncode != 0
    assert f"no wheelhouse at {tmp_path / 'no-wheels'}" in proc.stderr
    assert "--route index" in proc.stderr and "--route source" in proc.stderr


def test_wheelhouse_without_a_matching_wheel_lists_what_it_has(tmp_path):
    python, env = _python_with_fake_k2(tmp_path, "2.9.0")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "k2-1.24.4+cpu.torch2.9.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    proc = _run("--route", "wheelhouse", "--wheelhouse", str(tmp_path / "wheels"), python=python, env=env)
    assert proc.returncode != 0
    assert f"no k2 wheel for torch {TORCH}" in proc.stderr
    assert "k2-1.24.4+cpu.torch2.9.0-cp311" in proc.stderr


def test_bad_route_is_rejected():
    proc = _run("--route", "conda")
    assert proc.returncode == 2 and "--route must be auto, wheelhouse, index or source" in proc.stderr


def _fake_k2_tree(root: Path, with_default_ctor: bool) -> Path:
    (root / "k2/csrc").mkdir(parents=True)
    (root / "k2/python/csrc/torch").mkdir(parents=True)
    (root / "setup.py").write_text('cmake_args = "-DCMAKE_CXX_STANDARD=17"\n')
    (root / "CMakeLists.txt").write_text("set(CMAKE_CXX_STANDARD 17 CACHE STRING \"\")\n")
    default = "  RaggedShapeLayer() = default;\n" if with_default_ctor else ""
    (root / "k2/csrc/ragged.h").write_text(
        "namespace k2 {\nstruct RaggedShapeLayer {\n" + default +
        "  Array1<int32_t> row_splits;\n  Array1<int32_t> row_ids;\n  int32_t cached_tot_size;\n};\n}\n")
    (root / "k2/python/csrc/torch/ragged.cu").write_text(
        "  pyclass.def(py::pickle(\n      [](const PyClass &obj) {\n        return py::make_tuple(1, 2);\n"
        "      },\n      [](py::tuple t) { return PyClass(); }));\n")
    return root


def test_source_route_patches_apply_once(tmp_path):
    for with_default in (False, True):
        root = _fake_k2_tree(tmp_path / f"k2-{with_default}", with_default)
        for _ in range(2):  # idempotent
            subprocess.run([sys.executable, str(REPO / "tools/k2_source_patches.py"), str(root)], check=True)
        assert "-DCMAKE_CXX_STANDARD=20" in (root / "setup.py").read_text()
        assert "set(CMAKE_CXX_STANDARD 20" in (root / "CMakeLists.txt").read_text()
        header = (root / "k2/csrc/ragged.h").read_text()
        assert header.count("RaggedShapeLayer() = default;") == 1
        assert header.count("int32_t cached_tot_size)\n") == 1
        cu = (root / "k2/python/csrc/torch/ragged.cu").read_text()
        assert cu.count("[](const PyClass &obj) -> py::tuple {") == 1
        assert "[](py::tuple t) { return" in cu  # __setstate__ untouched
