"""cluster.yaml passes Ray's own validation and fits its instances; the multi-node path runs on
real Ray clusters on this machine: two static `ray start` nodes with fake GPUs, and Ray's fake
*autoscaling* provider, whose head has no GPU and whose GPU workers start from zero when trials
ask for them (as `ray up cluster.yaml` does). Only the Ray processes these tests start are stopped."""

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

from helpers.cli import (
    DEFAULT,
    clean_env,
    descendants,
    free_port,
    kill_pids,
    one_error_line,
    processes,
    ran_ok,
    run_cli,
    start_cli,
    wait_for,
)
from helpers.cluster import LocalCluster
from helpers.records import trial_records, trial_results

RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def cluster():
    c = LocalCluster()
    try:
        yield c.start(workers=1)
    finally:
        c.stop()


def _concurrency(exp: Path) -> int:
    spans = []
    for rows in trial_results(exp).values():
        start = rows[0]["time"] - rows[0]["time_total_s"]
        spans.append((start, rows[-1]["time"]))
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


@pytest.mark.slow
def test_grid_on_two_nodes_packs_trials_and_resumes_from_shared_storage(cluster, tmp_path):
    args = [
        DEFAULT,
        "blocks=[baseline,skipinit]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0,1,2,3]",
        "epochs=5",
        "trials_per_gpu=2",
        "cpus_per_trial=0.25",
        "device=cpu",
        "wandb.mode=offline",
        f"storage_path={tmp_path}",
        "name=mn",
        "--address",
        cluster.address,
    ]
    p = run_cli(args, env=cluster.env, cwd=tmp_path)
    ran_ok(p)
    exp = tmp_path / "mn"
    hist = pd.read_csv(exp / "history.csv")
    assert (hist.groupby(["block", "seed"]).size() == 5).all() and len(hist) == 8 * 5
    assert hist["node"].nunique() == 2, "trials ran on both nodes"
    # k=2 trials per GPU x G=2 GPUs: at most 4 at once (CPUs alone would allow 8)
    assert 2 <= _concurrency(exp) <= 4
    before = trial_results(exp)
    p = run_cli([*args, "--resume"], env=cluster.env, cwd=tmp_path)
    ran_ok(p)
    assert trial_results(exp) == before and "nothing to run" in p.stdout  # nothing rerun
    assert len(pd.read_csv(exp / "trials.csv")) == 8


@pytest.mark.slow
def test_lost_worker_node_trials_finish_on_the_rest(cluster, tmp_path):
    args = [
        DEFAULT,
        "blocks=[baseline]",
        "depths=[20]",
        "lrs=[0.1]",
        "seeds=[0,1]",
        "epochs=12",
        "gpus_per_trial=1",
        "cpus_per_trial=0.5",
        "device=cpu",
        "wandb.mode=disabled",
        "max_failures=3",
        "checkpoint_period_s=0",
        f"storage_path={tmp_path}",
        "name=lost",
        "--address",
        cluster.address,
    ]
    log = open(tmp_path / "grid.log", "w")
    proc = start_cli(args, env=cluster.env, cwd=tmp_path, log=log)
    exp = tmp_path / "lost"
    worker_node = None

    def on_worker_with_progress():
        nonlocal worker_node
        nodes = set()
        for r in trial_records(exp).values():
            rows = r["members"][0]["history"]
            if len(rows) >= 2:
                nodes.add(rows[-1]["node"])
        head_id = _node_id_of_head(cluster)
        others = nodes - {head_id}
        if others:
            worker_node = others.pop()
            return True
        return False

    hist, trials = _lose_a_node_midrun(
        proc,
        exp,
        tmp_path / "grid.log",
        on_worker_with_progress,
        "a trial with progress on the worker node",
        240,
        lambda: cluster.kill_node("worker0"),
    )
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == 12).all()
    assert (hist.groupby("seed")["epoch"].apply(list) == [list(range(1, 13))] * 2).all()
    moved = hist[hist["node"] == worker_node]["seed"].unique()
    assert len(moved) == 1
    assert hist[hist["seed"] == moved[0]]["node"].iloc[-1] != worker_node, "finished on the remaining node"


def _lose_a_node_midrun(proc, exp, log, ready, what, timeout, kill):
    """Wait for ``ready``, lose a node (``kill``), let the grid finish; its history and trials tables."""
    try:
        wait_for(ready, timeout, what)
        kill()
        assert proc.wait(timeout=480) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return pd.read_csv(exp / "history.csv"), pd.read_csv(exp / "trials.csv")


def _node_id_of_head(cluster) -> str:
    """The head's node id (as trials report it); asked once per cluster."""
    if not getattr(cluster, "_head_id", None):
        code = (
            f"import ray; ray.init(address={cluster.address!r}, log_to_driver=False); "
            "print(next(n['NodeID'] for n in ray.nodes() "
            "if n['Alive'] and 'node:__internal_head__' in n['Resources']))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=cluster.env, capture_output=True, text=True, timeout=120, check=True
        )
        cluster._head_id = out.stdout.strip().splitlines()[-1]
    return cluster._head_id


GPU_WORKER = {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}

CPU_WORKER = {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 1}


class FakeAutoscalingCluster:
    """`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml`.

    The provider config is written whole (Ray 2.60's wheel lacks the fake provider's example
    yaml), at the path `ray up` uses on a head node, under a HOME of the test's own; the head has
    no GPU, and the autoscaler starts worker nodes (raylets, children of its monitor) on demand.
    """

    def __init__(self, home: Path, worker_types):
        self.home = home
        self.temp_dir = f"/tmp/abl-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        ip = socket.gethostbyname(socket.gethostname())
        self.address = f"{ip}:{self.port}"
        self.env = clean_env(
            RAY_AUTH_MODE="disabled",
            RAY_FAKE_CLUSTER="1",
            HOME=str(home),
            # a lost node is declared dead after ~3 s, not the default ~30 s
            RAY_health_check_period_ms="1000",
            RAY_health_check_failure_threshold="3",
        )
        self.config = {
            "cluster_name": "fake",
            "max_workers": 4,
            "idle_timeout_minutes": 5,
            "upscaling_speed": 1.0,
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,
            },
            "auth": {},
            # The provider knows its head by this type name (else it launches one more "head").
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
                **worker_types,
            },
            "head_node_type": "ray.head.default",
            **{
                k: []
                for k in (
                    "initialization_commands",
                    "setup_commands",
                    "head_setup_commands",
                    "worker_setup_commands",
                    "head_start_ray_commands",
                    "worker_start_ray_commands",
                    "cluster_synced_files",
                    "rsync_exclude",
                    "rsync_filter",
                )
            },
            "file_mounts": {},
            "file_mounts_sync_continuously": False,
        }
        self.pids = set()

    def start(self):
        (self.home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(self.config))
        before = set(processes())
        subprocess.run(
            [
                RAY,
                "start",
                "--head",
                f"--port={self.port}",
                "--num-cpus=1",
                "--num-gpus=0",
                "--autoscaling-config=~/ray_bootstrap_config.yaml",
                "--include-dashboard=false",
                f"--temp-dir={self.temp_dir}",
                "--disable-usage-stats",
            ],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        # Only ours (named by our temp dir): another test's processes may start meanwhile (pytest-xdist).
        self.pids = {pid for pid, (_, cmd) in processes().items() if pid not in before and self.temp_dir in cmd}
        return self

    def raylets(self):
        """{node id: raylet pid} of the live nodes."""
        out = {}
        for pid, (_, cmd) in processes().items():
            if self.temp_dir in cmd and "/raylet/raylet" in cmd:
                m = re.search(r"--node_id=([0-9a-f]+)", cmd)
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                over = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RAY_OVERRIDE_NODE_ID_FOR_TESTING=")]
                out[over[0] if over else (m.group(1) if m else f"pid{pid}")] = pid
        return out

    def kill_node(self, node_id):
        """Lose a worker node: SIGKILL its raylet and everything under it."""
        kill_pids(descendants([self.raylets()[node_id]]))

    def stop(self):
        roots = self.pids | {pid for pid, (_, cmd) in processes().items() if self.temp_dir in cmd}
        kill_pids(descendants(roots))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def autoscaling(tmp_path):
    clusters = []

    def make(*worker_types):
        home = tmp_path / f"home{len(clusters)}"
        home.mkdir()
        c = FakeAutoscalingCluster(home, {name: spec for name, spec in worker_types})
        clusters.append(c)
        return c.start()

    yield make
    for c in clusters:
        c.stop()


@pytest.mark.slow
def test_trials_wait_for_autoscaled_gpu_workers_and_wandb_runs_land_in_storage(autoscaling, tmp_path):
    cluster = autoscaling(("gpu_worker", GPU_WORKER))
    fake_key = "fake0cluster0key" + "7" * 24
    env = dict(cluster.env, WANDB_API_KEY=fake_key, WANDB_BASE_URL="http://127.0.0.1:9")
    storage = f"file://{tmp_path}/store"
    args = [
        DEFAULT,
        "blocks=[baseline,skipinit]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0,1,2]",
        "epochs=3",
        "trials_per_gpu=2",
        "cpus_per_trial=1",
        "device=cpu",
        "wandb.mode=online",
        "wandb.init_timeout=3",
        f"storage_path={storage}",
        "name=auto",
        "--address",
        cluster.address,
    ]
    p = run_cli(args, env=env, cwd=tmp_path)
    out = p.stdout + p.stderr
    ran_ok(p)
    assert "wait for the autoscaler" in out  # gpus_per_trial unset: 1/trials_per_gpu of a GPU
    exp = tmp_path / "store" / "auto"
    hist = pd.read_csv(exp / "history.csv")
    assert len(hist) == 6 * 3 and (hist.groupby(["block", "seed"]).size() == 3).all()
    head = _node_id_of_head(cluster)
    assert head not in set(hist["node"]), "no trial on the head (it has no GPU)"
    # The head is the only node `ray start` made; every other is one the autoscaler launched.
    assert all(re.fullmatch(r"f{51}\d{5}", n) for n in hist["node"]), "every trial on an autoscaled GPU worker"
    assert _concurrency(exp) <= 2 * GPU_WORKER["max_workers"]  # trials_per_gpu x GPUs at most
    # The driver's key reached every trial (they tried online, and fell back offline against
    # the dead server), and every offline run is in the experiment's storage, per trial.
    assert "No WandB API key found" not in out and "falling back to offline" in out
    from helpers.wandb_reader import merged_history, wandb_files

    runs = wandb_files(exp)
    assert sorted(runs) == sorted(hist["trial_id"].astype(str).unique())
    for files in runs.values():
        assert [s for s, _ in merged_history(files)] == [1, 2, 3]
    # The key is in no file of the storage, the local results, or the cluster's logs.
    written = [f for d in (tmp_path, Path(cluster.temp_dir)) for f in d.rglob("*") if f.is_file()]
    assert len(written) > 20
    for f in written:
        assert fake_key.encode() not in f.read_bytes(), f"W&B key leaked into {f}"
    assert fake_key not in out


@pytest.mark.slow
def test_worker_node_lost_mid_trial_finishes_elsewhere_with_nothing_lost_or_twice(autoscaling, tmp_path):
    cluster = autoscaling(("gpu_worker", GPU_WORKER))
    args = [
        DEFAULT,
        "blocks=[baseline]",
        "depths=[14]",
        "lrs=[0.1]",
        "seeds=[0,1]",
        "epochs=10",
        "trials_per_gpu=1",
        "cpus_per_trial=1",
        "device=cpu",
        "wandb.mode=offline",
        "max_failures=3",
        "checkpoint_period_s=0",
        f"storage_path={tmp_path}",
        "name=lost",
        "--address",
        cluster.address,
    ]
    proc = start_cli(args, env=cluster.env, cwd=tmp_path, log=open(tmp_path / "grid.log", "w"))
    exp = tmp_path / "lost"
    victim = {}

    def trial_with_progress_on_a_worker():
        for name, r in trial_records(exp).items():
            rows = r["members"][0]["history"]
            if len(rows) >= 2:
                victim.update(node=rows[-1]["node"], trial=name)
                return True
        return False

    hist, trials = _lose_a_node_midrun(
        proc,
        exp,
        tmp_path / "grid.log",
        trial_with_progress_on_a_worker,
        "a trial with two epochs on an autoscaled worker",
        300,
        lambda: cluster.kill_node(victim["node"]),
    )
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs_done"] == 10).all()
    assert (hist.groupby("seed")["epoch"].apply(list) == [list(range(1, 11))] * 2).all(), "each epoch once"
    moved = hist[hist["node"] == victim["node"]]["seed"].unique()
    assert len(moved) == 1
    assert hist[hist["seed"] == moved[0]]["node"].iloc[-1] != victim["node"], "finished on another node"
    from helpers.wandb_reader import merged_history, wandb_files

    for files in wandb_files(exp).values():  # W&B: every epoch, each once, across the run's files
        assert [s for s, _ in merged_history(files)] == list(range(1, 11))


@pytest.mark.slow
def test_cluster_without_gpu_node_type_refuses_a_gpu_fraction_before_any_trial(autoscaling, tmp_path):
    cluster = autoscaling(("cpu_worker", CPU_WORKER))
    args = [
        DEFAULT,
        "blocks=[baseline]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0]",
        "epochs=1",
        "gpus_per_trial=0.5",
        "wandb.mode=offline",
        f"storage_path={tmp_path}",
        "name=nogpu",
        "--address",
        cluster.address,
    ]
    p = run_cli(args, env=cluster.env, cwd=tmp_path)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("ablate.grid:")]
    assert len(errors) == 1 and "'gpus_per_trial'" in errors[0] and "can add none" in errors[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "nogpu").exists()  # nothing written, no trial started
    # Unset, the same cluster trains on CPUs with a one-line notice.
    p = run_cli([a for a in args if a != "gpus_per_trial=0.5"], env=cluster.env, cwd=tmp_path)
    ran_ok(p)
    assert "trials train on CPUs" in p.stderr


class _WebServer:
    """A plain HTTP server on loopback (as the dashboard, or any web service, on a port given as --address)."""

    def __enter__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Quiet(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_a_web_server_as_address_is_one_line_and_a_real_head_passes_the_check(tmp_path):
    from ablate.run.cluster import check_address

    args = [
        DEFAULT,
        "blocks=[baseline]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0]",
        "epochs=1",
        "wandb.mode=disabled",
        f"storage_path={tmp_path / 's'}",
        "name=web",
    ]
    with _WebServer() as address:
        p = run_cli([*args, "--address", address], cwd=tmp_path, timeout=60)  # not Ray's 90 s wait for a GCS
    one_error_line(p, "not a Ray cluster's GCS")
    assert not (tmp_path / "s" / "web").exists()
    head = LocalCluster()
    try:
        head.start(workers=0)
        check_address(head.address)  # Ray's own GCS speaks HTTP/2 (gRPC): it passes
    finally:
        head.stop()
