"""Fixtures shared by the unit tests (``tests/unit``: in-process, no Ray, no subprocess: the inner loop) and the
system tests (``tests/system``: the real CLI, Ray, SLURM, hosts).  The helpers are modules of ``tests/helpers``."""

import pytest

from helpers.cli import DEFAULT, MINI, run_cli


@pytest.fixture(scope="session")
def mini_grid(tmp_path_factory):
    """Run the mini-grid once; tests of the grid, W&B and the report read what it wrote."""
    storage = tmp_path_factory.mktemp("storage")
    proc = run_cli([DEFAULT, *MINI, f"storage_path={storage}", "name=mini"], cwd=storage)
    exp = storage / "mini"
    return {"proc": proc, "dir": exp, "storage": storage}


# The system files' cost in seconds, measured (2 workers on a 2-core machine, 2026-12-08: the junit times of
# `python -m pytest -n 2 --dist loadfile`; the files that run one trial at a time re-measured after that change).
# pytest-xdist's loadfile hands each worker a whole file as it frees up; handing out the longest first (with
# --no-loadscope-reorder, pyproject's addopts) keeps one long file from starting last and running alone at the
# end.  Only the order depends on these: a stale figure costs minutes of CI, never a result.  A file not listed
# counts as short.
MEASURED_S = {
    "tests/system/test_onprem.py": 411,
    "tests/system/test_ray_cluster.py": 374,
    "tests/system/test_hostile_input.py": 343,
    "tests/system/test_signals.py": 332,
    "tests/system/test_resume.py": 223,
    "tests/system/test_slurm_nodes.py": 157,
    "tests/system/test_slurm.py": 145,
    "tests/system/test_s3_outage.py": 140,
    "tests/system/test_compare.py": 137,
    "tests/system/test_grid.py": 129,
    "tests/system/test_careless_use.py": 120,
    "tests/system/test_until_resolved.py": 117,
    "tests/system/test_swept_axes.py": 99,
    "tests/system/test_fused_resume.py": 93,
    "tests/system/test_user_blocks.py": 91,
    "tests/system/test_sweep.py": 84,
    "tests/system/test_faults.py": 69,
}


def pytest_collection_modifyitems(items):
    """The longest files first (a stable sort: a file's tests keep their order)."""
    items.sort(key=lambda item: -MEASURED_S.get(item.nodeid.split("::")[0], 0))
