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
