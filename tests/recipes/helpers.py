"""Running a recipe's run.sh in a scratch directory, as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def recipe_copy(tmp_path: Path, name: str) -> Path:
    """egs/<name>/run.sh in a scratch dir, with ``local`` pointing at the checkout's local/."""
    d = tmp_path / "egs" / name
    d.mkdir(parents=True)
    shutil.copy(REPO / "egs" / name / "run.sh", d / "run.sh")
    (d / "local").symlink_to(REPO / "local")
    return d


def run_recipe(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run(["bash", str(recipe / "run.sh"), *args], cwd=recipe, env=env,
                          capture_output=True, text=True, timeout=900)
