"""cluster.yaml passes Ray's own validation; the multi-node path runs on a real two-node Ray
cluster on this machine (two `ray start` nodes on 127.0.0.1 with fake GPUs), and a lost worker
node's trials finish on the remaining node. Only the Ray processes these tests start are stopped."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import DEFAULT, REPO, clean_env, run_cli, start_cli, wait_for

RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def test_cluster_yaml_validates_and_holds_no_secrets():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(raw))  # raises on unknown keys or a bad schema
    bad = dict(raw, bogus_key=1)
    with pytest.raises(Exception, match="bogus_key"):
        validate_config(prepare_config(bad))
    assert raw["available_node_types"][raw["head_node_type"]]["resources"] == {"CPU": 0}  # no trials on the head
    import ray

    assert raw["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-py311-gpu")
    text = (REPO / "cluster.yaml").read_text()
    assert not re.search(r"(api[_-]?key|secret|password|token)\s*[:=]\s*\S", text, re.I)
    assert not re.search(r"\b[0-9a-f]{40}\b", text)  # a W&B key is 40 hex characters
    assert "AKIA" not in text  # an AWS access key id
    assert "--dashboard-host=127.0.0.1" in " ".join(raw["head_start_ray_commands"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs():
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out[int(p.name)] = (ppid, cmd)
    return out


class LocalCluster:
    """A head and worker nodes started with `ray start` on 127.0.0.1, each with a fake GPU."""

    def __init__(self):
        self.temp_dir = f"/tmp/abl-{uuid.uuid4().hex[:8]}"
        # The same auth mode for every command: a head turns token auth on by itself when
        # ~/.ray/auth_token exists, and a node or driver without it then fails after ~20 s.
        self.env = clean_env(RAY_AUTH_MODE="disabled")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes = {}

    def _start(self, args, name):
        before = set(_procs())
        subprocess.run([RAY, "start", *args, "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=1",
                        "--disable-usage-stats"], env=self.env, check=True, capture_output=True, timeout=120)
        self.nodes[name] = set(_procs()) - before

    def start(self, workers=1):
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"],
                    "head")
        for i in range(workers):
            self._start([f"--address={self.address}"], f"worker{i}")
        return self

    def node_raylet(self, name):
        procs = _procs()
        return next(pid for pid in self.nodes[name] if pid in procs and "/raylet/raylet" in procs[pid][1])

    def kill_node(self, name):
        """Lose a node: SIGKILL its raylet, the processes it started, and its other daemons."""
        raylet = self.node_raylet(name)
        children = [pid for pid, (ppid, _) in _procs().items() if ppid == raylet]
        for pid in [raylet, *children, *self.nodes[name]]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self):
        """Stop our nodes only: the daemons we saw start, and the workers their raylets started."""
        ours = set().union(*self.nodes.values())
        procs = _procs()
        ours |= {pid for pid, (ppid, _) in procs.items() if ppid in ours}
        ours |= {pid for pid, (_, cmd) in procs.items() if self.temp_dir in cmd}
        for pid in ours:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def cluster():
    c = LocalCluster()
    try:
        yield c.start(workers=1)
    finally:
        c.stop()


def _concurrency(exp: Path) -> int:
    spans = []
    for f in exp.glob("*/result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        start = rows[0]["time"] - rows[0]["time_total_s"]
        spans.append((start, rows[-1]["time"]))
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


def test_grid_on_two_nodes_packs_trials_and_resumes_from_shared_storage(cluster, tmp_path):
    args = [DEFAULT, "blocks=[baseline,skipinit]", "depths=[8]", "lrs=[0.1]", "seeds=[0,1,2,3]", "epochs=5",
            "trials_per_gpu=2", "cpus_per_trial=0.25", "device=cpu", "wandb.mode=offline",
            f"storage_path={tmp_path}", "name=mn", "--address", cluster.address]
    p = run_cli(args, env=cluster.env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    exp = tmp_path / "mn"
    hist = pd.read_csv(exp / "history.csv")
    assert (hist.groupby(["block", "seed"]).size() == 5).all() and len(hist) == 8 * 5
    assert hist["node"].nunique() == 2, "trials ran on both nodes"
    # k=2 trials per GPU x G=2 GPUs: at most 4 at once (CPUs alone would allow 8)
    assert 2 <= _concurrency(exp) <= 4
    before = {f: f.read_text() for f in exp.glob("*/result.json")}
    p = run_cli([*args, "--resume"], env=cluster.env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert {f: f.read_text() for f in exp.glob("*/result.json")} == before  # nothing rerun
    assert len(pd.read_csv(exp / "trials.csv")) == 8


def test_lost_worker_node_trials_finish_on_the_rest(cluster, tmp_path):
    args = [DEFAULT, "blocks=[baseline]", "depths=[20]", "lrs=[0.1]", "seeds=[0,1]", "epochs=12",
            "gpus_per_trial=1", "cpus_per_trial=0.5", "device=cpu", "wandb.mode=disabled", "max_failures=3",
            f"storage_path={tmp_path}", "name=lost", "--address", cluster.address]
    log = open(tmp_path / "grid.log", "w")
    proc = start_cli(args, env=cluster.env, cwd=tmp_path, log=log)
    exp = tmp_path / "lost"
    worker_node = None

    def on_worker_with_progress():
        nonlocal worker_node
        nodes = set()
        for f in exp.glob("*/result.json"):
            rows = [json.loads(line) for line in f.read_text().splitlines()]
            if len(rows) >= 2:
                nodes.add(rows[-1]["node"])
        head_id = _node_id_of_head(cluster)
        others = nodes - {head_id}
        if others:
            worker_node = others.pop()
            return True
        return False

    try:
        wait_for(on_worker_with_progress, 240, "a trial with progress on the worker node")
        cluster.kill_node("worker0")
        assert proc.wait(timeout=480) == 0, (tmp_path / "grid.log").read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    hist = pd.read_csv(exp / "history.csv")
    trials = pd.read_csv(exp / "trials.csv")
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == 12).all()
    assert (hist.groupby("seed")["epoch"].apply(list) == [list(range(1, 13))] * 2).all()
    moved = hist[hist["node"] == worker_node]["seed"].unique()
    assert len(moved) == 1
    assert hist[hist["seed"] == moved[0]]["node"].iloc[-1] != worker_node, "finished on the remaining node"


def _node_id_of_head(cluster) -> str:
    """The head's node id (first 12 characters, as trials report it); asked once per cluster."""
    if not getattr(cluster, "_head_id", None):
        code = (f"import ray; ray.init(address={cluster.address!r}, log_to_driver=False); "
                "print(next(n['NodeID'] for n in ray.nodes() "
                "if n['Alive'] and 'node:__internal_head__' in n['Resources']))")
        out = subprocess.run([sys.executable, "-c", code], env=cluster.env, capture_output=True, text=True,
                             timeout=120, check=True)
        cluster._head_id = out.stdout.strip().splitlines()[-1][:12]
    return cluster._head_id
