"""All of ablate's W&B: one run per trial, started inside the trial, never a cost to a result;
the key's way to the trials; what an offline run already holds; the W&B Report.

Why ``wandb.init`` in the trial and not Ray's ``WandbLoggerCallback``: the callback runs one
logging actor per trial from the driver and, in Ray 2.60, crashed the whole Tuner (``KeyError`` in
``_signal_logging_actor_stop``) on a 4-trial offline grid on 2 CPUs; in the trial's own process a
W&B fault can only ever reach this module, which swallows it.  (Ray's ``setup_wandb`` is this
same ``wandb.init`` plus defaults read from the Tune context, which the trial passes itself.)

The API key comes only from the environment (``WANDB_API_KEY``) or ``wandb login`` on the machine
that runs the grid, and reaches the trials (on any node) in memory, with their parameters; it is
never put into a config, a file, a log line or a result.
"""
from __future__ import annotations

import atexit
import os
import warnings
from typing import Any, Dict, List, Optional

from .records import loggable
from .storage import RUN_PREFIX, is_uri

__all__ = ["resolve_mode", "TrialRun", "start_trial_run", "start_runs", "finish_runs", "has_api_key", "driver_api_key", "trial_env",
           "build_wandb_report", "save_wandb_report"]


def driver_api_key() -> Optional[str]:
    """The key of the machine that runs the grid: ``WANDB_API_KEY``, else ``wandb login``'s.

    ``wandb login`` keeps the key in the netrc file (``~/.netrc``, or ``$NETRC``) under the W&B
    host (``WANDB_BASE_URL``, default api.wandb.ai); read there with the netrc lookup wandb itself
    uses (requests'), not through ``wandb.api``, which wandb 0.31 deprecates.  Returned only to be
    handed to the trials in memory (``trial_env``); never printed or written.
    """
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        from requests.utils import get_netrc_auth

        auth = get_netrc_auth(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
        return auth[1] if auth and auth[1] else None
    except Exception:  # an unreadable netrc: no key
        return None


def has_api_key() -> bool:
    return bool(driver_api_key())


# What a trial needs of the driver's W&B environment.  Ray starts trial processes from the
# raylets of (possibly autoscaled) nodes, not from the driver, so these travel with the trial's
# parameters (in memory, never in a runtime env, whose agent logs its variables).
_FORWARDED = ("WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_INIT_TIMEOUT")


def trial_env(mode: str) -> Dict[str, str]:
    """Environment variables every trial process needs for W&B in ``mode``."""
    if mode != "online":
        return {}
    env = {k: os.environ[k] for k in _FORWARDED if os.environ.get(k)}
    key = driver_api_key()
    if key:
        env["WANDB_API_KEY"] = key
    return env


# W&B's own variable, as W&B reads it (``dryrun`` is its old word for offline, ``run`` for online).
_WANDB_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}


def resolve_mode(mode: str) -> str:
    """The W&B mode of a run: the experiment's ``wandb.mode`` where it names one; for ``auto`` (the default),
    W&B's own ``WANDB_MODE`` where it is set (a user's ``WANDB_MODE=offline`` stays offline, key or not),
    else ``online`` where an API key is configured and ``offline`` where none is."""
    if mode != "auto":
        return mode
    env = _WANDB_MODES.get(os.environ.get("WANDB_MODE", "").strip().lower())
    if env:
        return env
    return "online" if has_api_key() else "offline"


class TrialRun:
    """A W&B run that never raises: the first failure warns once and turns logging off."""

    def __init__(self, run: Any = None, mode: str = "disabled") -> None:
        self.run, self.mode = run, mode
        self.logged: set = set()  # steps earlier processes of this (offline) run already wrote

    def _guard(self, what: str, fn) -> None:
        if self.run is None:
            return
        try:
            fn()
        except Exception as e:  # W&B must never cost a result
            warnings.warn(f"W&B {what} failed ({e.__class__.__name__}: {e}); training goes on without W&B")
            self.run = None

    def log(self, metrics: Dict[str, Any], step: int) -> None:
        self._guard("log", lambda: self.run.log(metrics, step=step))

    def log_once(self, metrics: Dict[str, Any], step: int) -> None:
        """Log ``step`` unless an earlier process of this run already wrote it."""
        if step not in self.logged:
            self.log(metrics, step=step)
            self.logged.add(step)

    def replay(self, history) -> None:
        """Log the epochs a restored checkpoint holds that this W&B run has not seen.

        A trial killed with SIGKILL loses what W&B had buffered (an offline run file can be
        left empty), while the checkpoint holds every finished epoch.  A resumed online run
        knows its last step (``run.step``); W&B drops steps below it, so only newer epochs go.
        Offline, the earlier processes' run files say which steps they hold (``logged``).
        """
        if self.run is None:
            return
        first = int(getattr(self.run, "step", 0) or 0)
        for h in history:
            if h["epoch"] >= first:
                self.log_once(h, step=h["epoch"])

    def finish(self, summary: Dict[str, Any]) -> None:
        def _fin():
            for k, v in summary.items():
                self.run.summary[k] = v
            self.run.finish()
            _OPEN.discard(id(self.run))

        self._guard("finish", _fin)


def finish_runs(runs: List[TrialRun], summaries: List[Dict[str, Any]]) -> None:
    """Finish a trial's runs (a fused trial has one per member), then close W&B's service now, not
    in an atexit hook Ray may cut short."""
    for run, summary in zip(runs, summaries):
        run.finish(summary)
    if any(r.mode != "disabled" for r in runs):
        _quiet_teardown()


# Runs this process has open: a fused trial's members share the W&B service, which a failed
# start must then not tear down under the others.
_OPEN: set = set()


def _quiet_teardown() -> None:
    try:
        import wandb

        wandb.teardown()
    except Exception:  # the service is gone: nothing left to flush
        pass


def start_trial_run(config: Dict[str, Any], *, project: str, group: str, name: str, run_id: str,
                    mode: str, directory: str, tags=(), entity: Optional[str] = None,
                    init_timeout: float = 60.0) -> TrialRun:
    """Start (or resume, same ``run_id``) the trial's W&B run; fall back to offline, then to none."""
    if mode == "disabled":
        return TrialRun()
    import wandb

    attempts = [mode] if mode == "offline" else [mode, "offline"]
    for m in attempts:
        try:
            os.makedirs(directory, exist_ok=True)
            os.environ["WANDB_MODE"] = m  # no key needed offline
            os.environ.setdefault("WANDB_SILENT", "true")
            run = wandb.init(
                config=config, project=project, group=group, name=name, id=run_id, resume="allow",
                # create_new: a fused trial's members have a run each, open at once, in one process.
                reinit="create_new", allow_val_change=True, job_type="trial", tags=list(tags),
                entity=entity, dir=directory, mode=m,
                settings=wandb.Settings(init_timeout=init_timeout, console="off", x_disable_stats=True),
            )
            # step = epoch: let W&B plot against "epoch" too.
            run.define_metric("*", step_metric="epoch")
            # Ours last, so it runs first at exit: when Tune stops a trial (Ctrl-C on the grid)
            # the W&B service may be gone already, and wandb's own exit hook would print a
            # traceback into the grid's output; this one tears down quietly and unhooks it.
            atexit.unregister(_quiet_teardown)
            atexit.register(_quiet_teardown)
            _OPEN.add(id(run))
            return TrialRun(run, m)
        except Exception as e:
            nxt = "falling back to offline" if m != attempts[-1] else "training goes on without W&B"
            warnings.warn(f"W&B init ({m}) failed ({e.__class__.__name__}: {str(e)[:200]}); {nxt}")
            if not _OPEN:  # the failed run still holds its id in the W&B service: start the next try clean
                _quiet_teardown()
    return TrialRun()


def start_runs(cfgs, member_ids: List[str], *, wandb: Dict[str, Any], experiment: str, git_commit: Optional[str],
               directory: str, histories: List[List[Dict[str, Any]]], written=()) -> List[TrialRun]:
    """A W&B run per member of a trial (``cfgs``: their ``TrainConfig``), each continued where earlier
    processes left it: the epochs on record (``histories``) logged again, but not those an offline run
    already holds in ``written`` (``(pyarrow filesystem, path)`` pairs: the directories this trial's
    earlier processes wrote)."""
    runs = [start_trial_run(
        {**cfg.to_dict(), "experiment": experiment, "git_commit": git_commit}, project=wandb["project"],
        group=experiment, name=cfg.name, run_id=run_id, mode=wandb["mode"], directory=directory,
        tags=[cfg.block, f"d{cfg.depth}", cfg.dataset, *wandb.get("tags", [])], entity=wandb.get("entity"),
        init_timeout=wandb.get("init_timeout", 60.0)) for cfg, run_id in zip(cfgs, member_ids)]
    for run, run_id, history in zip(runs, member_ids, histories):
        if not history:
            continue
        if run.mode == "offline":  # what this run's earlier processes already wrote (synced or local)
            run.logged = logged_steps(run_id, written)
        run.replay([loggable(h) for h in history])
    return runs


def sync_hint(exp_dir: str) -> str:
    """How to upload a grid's offline runs: they are in each trial's own directory of the experiment's storage."""
    where = f"<a download of {exp_dir}>" if is_uri(exp_dir) else exp_dir
    return f"W&B offline runs: upload with  wandb sync {where}/{RUN_PREFIX}*/*/wandb/offline-run-*"


def build_wandb_report(meta: Dict[str, Any], trials, lines: List[str], entity: str, q=None,
                       glance: Optional[List[str]] = None):
    """The report page's comparison as a W&B Report (nothing leaves this process until ``.save()``).

    A section per context cell (by default per depth) with each compared value at its best LR (mean +-
    std over seeds, grouped by the compared axis), the LR-sensitivity view (final val acc against LR),
    and the run table.  ``q``: the report's ``Question`` (default: each block against baseline).
    """
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    from .stats import Question, cell_title
    from .results import ablation_table

    q = q or Question()
    group = meta.get("name", "ablate")
    project = (meta.get("wandb") or {}).get("project", "ablate")
    in_group = expr.Config("experiment") == group
    best = ablation_table(trials, q.subject, q.reference, q.context)
    # The answer at a glance first, as on the page: one line per compared value and cell (verdict, difference).
    blocks = [wr.H1("The answer at a glance"),
              wr.MarkdownBlock(text="```\n" + "\n".join(glance or ["(nothing to compare)"]) + "\n```"),
              wr.H1("Verdicts"), wr.UnorderedList(items=lines or ["(nothing to compare)"])]
    for cell, g in (best.groupby(q.cells, sort=True) if q.cells else [((), best)]):
        cell = cell if isinstance(cell, tuple) else (cell,)
        where = [expr.Config(c) == _native(v) for c, v in zip(q.cells, cell)]
        title = cell_title(q.cells, cell) if q.cells else group
        picks = [expr.And(expr.Config(q.subject) == _native(r[q.subject]), expr.Config("lr") == float(r["best_lr"]))
                 for r in g.to_dict("records")]
        runs = wr.Runset(entity=entity, project=project, name=f"{title} at best LR",
                         filters=expr.And(in_group, *where, expr.Or(*picks)), groupby=[q.subject])
        blocks += [wr.H1(f"{title}: each {q.subject} at its best LR (mean +- std over seeds)"),
                   wr.PanelGrid(runsets=[runs], panels=[
                       wr.LinePlot(title=f"{title}: val acc", x="epoch", y=["val_acc"], groupby=q.subject,
                                   groupby_aggfunc="mean", groupby_rangefunc="stddev", legend_position="east"),
                       wr.LinePlot(title=f"{title}: train loss", x="epoch", y=["train_loss"], log_y=True,
                                   groupby=q.subject, groupby_aggfunc="mean", groupby_rangefunc="stddev",
                                   legend_position="east")])]
    everything = wr.Runset(entity=entity, project=project, name=group, filters=[in_group], groupby=[q.subject])
    blocks += [wr.H1("LR sensitivity: final val acc against LR"),
               wr.PanelGrid(runsets=[everything], panels=[
                   wr.ScatterPlot(title="final val acc vs lr (every trial)", x=wr.Config("lr"),
                                  y=wr.SummaryMetric("final_val_acc"), log_x=True),
                   wr.ParallelCoordinatesPlot(title=f"{' / '.join(q.axes)} vs final val acc", columns=[
                       *(wr.ParallelCoordinatesPlotColumn(metric=wr.Config(a), log=a == "lr") for a in q.axes
                         if a != "seed"),
                       wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("final_val_acc"))])]),
               wr.H1("Runs"), wr.PanelGrid(runsets=[everything], panels=[wr.RunComparer(diff_only="split")])]
    return wr.Report(project=project, entity=entity, title=f"ablate: {group}",
                     description=f"Each {q.subject} against {q.reference}, at every {q.words()}",
                     blocks=blocks)


def _native(v):
    return v.item() if hasattr(v, "item") else v


def build_compare_report(before: Dict[str, Any], after: Dict[str, Any], lines: List[str], entity: str):
    """``ablate.compare``'s answer as a W&B Report: the per-cell verdicts, then the two experiments' groups side by
    side (val acc and train loss per epoch, mean +- std over seeds, one line per experiment)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    project = (after.get("wandb") or {}).get("project", "ablate")
    groups = [str(before.get("name", "before")), str(after.get("name", "after"))]
    runs = [wr.Runset(entity=entity, project=project, name=g, filters=[expr.Config("experiment") == g],
                      groupby=["block"]) for g in groups]
    return wr.Report(project=project, entity=entity, title=f"ablate.compare: {groups[1]} against {groups[0]}",
                     description="Did the change change the result? Paired by point and seed.",
                     blocks=[wr.H1("Per cell: same / changed / open"),
                             wr.MarkdownBlock(text="```\n" + "\n".join(lines) + "\n```"),
                             wr.H1("The two experiments"),
                             wr.PanelGrid(runsets=runs, panels=[
                                 wr.LinePlot(title="val acc", x="epoch", y=["val_acc"], groupby="block",
                                             groupby_aggfunc="mean", groupby_rangefunc="stddev"),
                                 wr.LinePlot(title="train loss", x="epoch", y=["train_loss"], log_y=True,
                                             groupby="block", groupby_aggfunc="mean", groupby_rangefunc="stddev")]),
                             wr.H1("Runs"), wr.PanelGrid(runsets=runs, panels=[wr.RunComparer(diff_only="split")])])


def save_wandb_report(meta: Dict[str, Any], trials, lines: List[str], q=None, glance: Optional[List[str]] = None) -> str:
    """Save the W&B Report with the configured (or default) entity; return its URL."""
    import wandb

    entity = (meta.get("wandb") or {}).get("entity") or os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
    report = build_wandb_report(meta, trials, lines, entity, q, glance)
    report.save()
    return report.url


# --- what an offline run already holds --------------------------------------------------------
# wandb ships no reader for its .wandb files (`wandb sync` reads them in its Go core); this is
# their documented LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each with a
# 7-byte header (CRC32 4, length 2 little-endian, type 1) whose payloads (FULL, or FIRST..LAST)
# join into one serialized ``wandb_internal_pb2.Record``.
_BLOCK, _HEADER = 32 * 1024, 7


def read_records(data: bytes) -> list:
    """The records of a .wandb file's bytes (a file cut short yields the records before the cut)."""
    from wandb.proto import wandb_internal_pb2 as pb

    if data[:4] != b":W&B":
        return []
    pos, buf, out = 7, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer: padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left
            continue
        if pos + _HEADER + length > len(data):
            break
        buf += data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            try:
                rec.ParseFromString(buf)
            except Exception:
                break
            out.append(rec)
            buf = b""
    return out


def logged_steps(run_id: str, dirs) -> set:
    """Steps that offline runs of ``run_id`` in ``dirs`` (``(pyarrow filesystem, path)`` pairs: the
    trial's working directory and its copy in the experiment's storage) already hold."""
    import pyarrow.fs as pafs

    steps = set()
    for fs, root in dirs:
        try:
            infos = fs.get_file_info(pafs.FileSelector(f"{root}/wandb", recursive=True, allow_not_found=True))
        except Exception:
            continue
        for info in infos:
            if info.type == pafs.FileType.File and info.base_name == f"run-{run_id}.wandb" \
                    and "/offline-run-" in info.path and "/latest-run/" not in info.path:
                try:
                    with fs.open_input_stream(info.path) as f:
                        data = f.read()
                except Exception:
                    continue
                steps |= {r.history.step.num for r in read_records(data) if r.WhichOneof("record_type") == "history"}
    return steps
