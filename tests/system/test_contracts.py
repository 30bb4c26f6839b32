"""The architecture's contract bites: ``lint-imports`` (as ``.ci/run`` runs it) fails on a deliberate
``import torch`` in ``ablate/spec``, naming the chain; and what the contract promises holds at run time: importing
the packages that never train loads neither torch nor Ray (nor wandb)."""

import os
import shutil
import subprocess
import sys

import pytest

from helpers.cli import REPO

pytestmark = pytest.mark.slow  # subprocesses


def _lint(root):
    """lint-imports on the copy of ablate at ``root`` (first on the path: the installed one is not read)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    config = str(root / ".importlinter")
    return subprocess.run(
        ["lint-imports", "--config", config], cwd=root, capture_output=True, text=True, env=env, timeout=120
    )


def test_lint_imports_fails_on_torch_in_spec(tmp_path):
    shutil.copytree(REPO / "ablate", tmp_path / "ablate", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    ok = _lint(tmp_path)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    settings = tmp_path / "ablate" / "spec" / "settings.py"
    settings.write_text(
        settings.read_text().replace(
            "from __future__ import annotations\n", "from __future__ import annotations\n\nimport torch  # noqa\n", 1
        )
    )
    broken = _lint(tmp_path)
    assert broken.returncode == 1, broken.stdout[-3000:]
    assert "BROKEN" in broken.stdout and "ablate.spec.settings -> torch" in broken.stdout, broken.stdout[-3000:]


def test_the_packages_that_never_train_import_neither_torch_nor_ray():
    code = (
        "import sys, ablate, ablate.spec, ablate.study, ablate.analysis, ablate.storage, ablate.models, "
        "ablate.formatting, ablate.errors, ablate.run\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'ray', 'wandb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_the_bundled_digits_load_without_importing_scikit_learn():
    """2.5 s of every grid's start on a 2-core machine (ablate.train.data.digits_arrays)."""
    code = (
        "import sys\nfrom ablate.train.data import load_dataset\n"
        "load_dataset('digits')\nprint('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", out.stdout
