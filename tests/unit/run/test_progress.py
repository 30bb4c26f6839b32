"""The progress line and the plan's time estimate, without Ray (a fake clock, an injected probe)."""

import io

from ablate.formatting import duration
from ablate.run.plan import EPOCH_OVER_PROBE, FIXED_S, PER_TRIAL_S, estimate_cpu_wall
from ablate.run.progress import Progress
from ablate.spec.experiment_file import load_experiment


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_counts_states_and_estimates_from_the_work_done():
    clock, out = Clock(), io.StringIO()
    trials = {
        "a": {"weight": 8, "start": 0, "epochs": 10},
        "b": {"weight": 56, "start": 5, "epochs": 10},
        "c": {"weight": 56, "start": 0, "epochs": 10},
    }
    p = Progress(trials, stream=out, live=False, clock=clock)
    assert p.eta() is None and "ETA ..." in p.line()
    p.start("a"), p.start("b")
    clock.t = 10.0
    for e in range(1, 11):
        p.result("a", {"epoch": e})
    p.complete("a")
    p.result("b", {"epoch": 6, "diverged": 1})
    # done: 8 x 10 + 56 x 1 = 136 units in 10 s; left: 56 x 4 (b) + 56 x 10 (c) = 784 units
    assert abs(p.eta() - 10.0 * 784 / 136) < 1e-9
    assert p.line() == "trials 1/3 done, 1 running, 1 pending, 1 diverged | 0:10 elapsed | ETA ~0:58"
    p.error("c")
    assert "1 errors" in p.line()


def test_progress_prints_a_plain_line_a_minute_off_a_terminal_and_redraws_on_one():
    clock, out = Clock(), io.StringIO()
    p = Progress({"a": {"weight": 1, "start": 0, "epochs": 1}}, stream=out, live=False, clock=clock)
    for t in (1, 30, 59):
        clock.t = t
        p.tick()
    assert out.getvalue() == ""
    clock.t = 61
    p.tick()
    p.close()
    assert len(out.getvalue().splitlines()) == 2 and "\r" not in out.getvalue()
    live = io.StringIO()
    q = Progress({"a": {"weight": 1, "start": 0, "epochs": 1}}, stream=live, live=True, clock=clock)
    clock.t = 62
    q.tick()
    q.close()
    assert live.getvalue().startswith("\rtrials 0/1 done") and live.getvalue().endswith("\n")


def test_duration_and_the_estimate_follow_the_probe():
    assert duration(95) == "1:35" and duration(3725) == "1:02:05"
    cfg = load_experiment(None, ["depths=[8,56]", "epochs=5", "blocks=[baseline]", "lrs=[0.1]", "seeds=[0,1]"])
    step = {8: 0.01, 56: 0.1}
    wall = estimate_cpu_wall(cfg, 2, step_seconds=lambda c, d: step[d])
    steps = -(-1438 // 128)
    assert abs(wall - (FIXED_S + (2 * 5 * steps * (0.01 + 0.1) * EPOCH_OVER_PROBE + 4 * PER_TRIAL_S) / 2)) < 1e-9


def test_fused_groups_are_counted_as_groups_and_their_trials():
    out, clock = io.StringIO(), iter(range(1000)).__next__
    groups = {
        "a+3": {"weight": 8, "start": 0, "epochs": 2, "members": 4},
        "b+3": {"weight": 8, "start": 0, "epochs": 2, "members": 4},
    }
    p = Progress(groups, stream=out, live=False, clock=clock)
    p.start("a+3")
    p.result("a+3", {"epoch": 2})
    p.complete("a+3")
    assert p.line().startswith("groups 1/2 done (trials 4/8), 0 running, 1 pending, 0 diverged"), p.line()
    plain = Progress({"a": {"weight": 8, "start": 0, "epochs": 2}}, stream=out, live=False, clock=clock)
    assert plain.line().startswith("trials 0/1 done"), plain.line()
