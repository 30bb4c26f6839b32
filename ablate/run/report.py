"""``python -m ablate.report EXPERIMENT_DIR [--wandb-report]``: the report of an experiment on record.

Reads the experiment's ``history.csv``, ``trials.csv`` and identity (rebuilding the tables from the trials'
records only where they are lost, cut short or being trained: ``ablate.study.reader``), so it works offline and
after the fact; writes ``report.html`` and ``report.md`` (``ablate.analysis.page``), uploads them beside a
bucket's experiment, and with ``--wandb-report`` saves the same analysis as a W&B Report.
"""

from __future__ import annotations

import argparse
from typing import List, Optional

from ablate import storage
from ablate.analysis.findings import answer_lines
from ablate.analysis.page import Page
from ablate.errors import UsageError, first_line
from ablate.run.cli import run_main
from ablate.study.reader import experiment_tables, read_experiment

__all__ = ["main", "write_report", "report_page"]

PROG = "ablate.report"


def report_page(exp_dir: str) -> Page:
    """The report of a local experiment directory whose tables are whole, its analysis computed once."""
    return Page.of(exp_dir, *read_experiment(exp_dir))


def write_report(exp_dir: str) -> str:
    """Write report.html and report.md into ``exp_dir`` (whose tables are whole); return the HTML path."""
    return report_page(exp_dir).write(exp_dir)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ablate.report",
        description="Write report.html and report.md for a finished experiment: each trick against baseline "
        "at every depth and LR (paired by seed, with intervals), its stable LR range, the table at "
        "each block's best LR, and the convergence figures. Reads the experiment's CSVs and settings (the "
        "tables rebuilt from the trials' records where they are lost, cut short or being trained).",
    )
    p.add_argument(
        "experiment_dir",
        help="the directory python -m ablate.grid named on its last line (it holds history.csv and trials.csv)",
    )
    p.add_argument(
        "--wandb-report",
        action="store_true",
        help="also save the same comparison as a W&B Report (needs WANDB_API_KEY or `wandb login`)",
    )
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    return run_main(PROG, lambda: _report(args.experiment_dir, args.wandb_report), oserror=_unwritable)


def _unwritable(e: OSError) -> str:
    """A read-only or full experiment directory: the report alone is lost."""
    return (
        f"cannot write the report ({e.__class__.__name__}: {first_line(e)}); the tables are unchanged; make the "
        "directory writable (or copy it), then run again"
    )


def _report(where: str, wandb_report: bool) -> int:
    out, notice = experiment_tables(where)
    if notice:
        print(f"{PROG}: notice: {notice}")
    page = report_page(out)
    path = page.write(out)
    if storage.is_uri(where):
        storage.upload(out, where, (storage.REPORT_HTML, storage.REPORT_MD))
    print(f"report: {path}")
    if wandb_report:
        print(f"W&B report: {_save_wandb_report(page, path)}")
    return 0


def _save_wandb_report(page: Page, path: str) -> str:
    from ablate.analysis.wandb_report import save_wandb_report  # wandb_workspaces: only with --wandb-report
    from ablate.run.tracking import has_api_key  # requests, as wandb_workspaces: only with --wandb-report

    if not has_api_key():
        raise UsageError("--wandb-report needs WANDB_API_KEY (or `wandb login`)")
    a = page.analysis
    try:
        return save_wandb_report(a.meta, a.trials, page.lines, a.q, answer_lines(a.q, a.cells))
    except Exception as e:  # noqa: BLE001 -- W&B refused the key, or is unreachable: the report above stands
        raise UsageError(
            f"W&B did not take the report ({e.__class__.__name__}: {first_line(e)}); {path} is written; "
            "check the key (wandb login) and the network"
        ) from None
