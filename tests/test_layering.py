"""Which package may import which, and one helper per concept (ARCHITECTURE.md, Packages)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from w2v.models.padding import lengths_to_padding_mask
from w2v.utils import check_config_fields

REPO = Path(__file__).resolve().parents[1]

# package -> packages above it, which it must not import (at the top or inside a function)
LOWER_THAN = {
    "w2v.models": ("w2v.ssl", "w2v.asr", "w2v.features", "w2v.decode", "w2v.lang", "w2v.bin"),
    "w2v.lang": ("w2v.asr", "w2v.decode", "w2v.models", "w2v.ssl", "w2v.bin"),
}


def _imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
    return modules


def test_importing_models_loads_nothing_from_ssl():
    """In a fresh interpreter: other tests' imports cannot hide an import of the pretraining stack."""
    code = "import sys, w2v.models; print([m for m in sys.modules if m.startswith('w2v.ssl')])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("package", sorted(LOWER_THAN))
def test_no_module_imports_a_higher_package(package):
    offenders = []
    for path in sorted((REPO / package.replace(".", "/")).rglob("*.py")):
        for module in _imported_modules(path):
            if module.startswith(LOWER_THAN[package]):
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert offenders == []


def test_padding_mask_values():
    mask = lengths_to_padding_mask(torch.tensor([3, 0, 5]), 5)
    assert mask.tolist() == [[False] * 3 + [True] * 2, [True] * 5, [False] * 5]


def test_check_config_fields_names_the_misspelling_and_the_expected():
    from w2v.asr.model import AsrConfig

    check_config_fields(AsrConfig, ["d_model", "num_heads"])
    with pytest.raises(ValueError, match=r"Unknown AsrConfig fields \['attention_dim'\]; expected a subset of \[.*'d_model'"):
        check_config_fields(AsrConfig, ["d_model", "attention_dim"])


@pytest.mark.parametrize(
    "definition",
    ["def lengths_to_padding_mask", "def padding_mask", "def make_pad_mask", "def check_config_fields",
     "def read_symbol_table", "def read_tokens", "def build_ctc_topo"],
)
def test_one_definition_per_helper(definition):
    """One place per concept: a second copy is how two of them came to disagree."""
    found = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "w2v").rglob("*.py"))
        if definition + "(" in path.read_text(encoding="utf-8")
    ]
    assert len(found) <= 1, found
