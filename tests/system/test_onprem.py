"""``cluster-onprem.yaml`` for real: Ray's cluster launcher (``ray up``, over SSH) on hosts of the multi-host
harness (tests/helpers/hosts.py: each its own address, hostname, /tmp, home and disk, its own sshd), the grid
submitted as a user would (``ray exec``), results on a real S3-compatible server (moto's server mode) with no
filesystem shared between the hosts, and ``ray down``.

The hosts: ``laptop`` (the user's machine: a checkout, the launcher, later the report; it runs no trial),
``head`` and two workers.  The S3 server runs on this machine's side of the bridge, as a lab's MinIO would on
its own box."""

import importlib.util
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.blocks import user_block
from helpers.cli import REPO, free_port, wait_for
from helpers.hosts import HOME, Hosts
from helpers.s3 import records_in

# The system tests: slow, and skipped (one line) where the kernel refuses namespaces or a tool is missing.
SKIP = Hosts.skip_reason()

on_hosts = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))

with_moto = pytest.mark.skipif(
    importlib.util.find_spec("moto") is None, reason="moto's S3 server is missing (pip install -e '.[test]')"
)

PYBIN = Path(sys.executable).parent

BUCKET = "ablate-onprem"

GRID = [
    "blocks=[baseline,skipinit]",
    "depths=[8]",
    "lrs=[0.1]",
    "seeds=[0]",
    "epochs=2",
    "wandb.mode=offline",
    # a whole worker (2 CPUs) per trial: the two trials can only run on two hosts
    "cpus_per_trial=2",
    "name=onprem",
]


def render(yaml_text, replacements):
    """cluster-onprem.yaml with the harness's values where a lab fills in its own (each line found once)."""
    for old, new in replacements.items():
        assert yaml_text.count(old) == 1, f"{old!r} is not once in cluster-onprem.yaml"
        yaml_text = yaml_text.replace(old, new)
    return yaml_text


class Moto:
    """moto's S3 server, on this machine's address on the test bridge (the hosts' S3 endpoint)."""

    def __init__(self, host, log):
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(self.port)],
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            try:
                socket.create_connection((host, self.port), 1).close()
                return True
            except OSError:
                return self.proc.poll() is not None

        wait_for(up, 60, "moto's S3 server")
        assert self.proc.poll() is None, open(log).read()[-2000:]
        self.client().create_bucket(Bucket=BUCKET)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def keys(self, prefix=""):
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def read(self, key):
        return self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=30)


def checkout(dest: Path):
    """The user's checkout on the laptop: the repository's files as git knows them (tracked and new, not ignored)."""
    files = (
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            (dest / f).write_bytes(src.read_bytes())


def prepare(hosts, moto, head_flags="", blocks=None):
    """What a lab's admin sets up once on each host: the login PATH with Python 3 on it (only `python3`
    on the cluster's hosts, so `ray` is on no login PATH there; the laptop has Ray installed), S3 keys."""
    laptop = hosts[0]
    for h in hosts:
        (h.home / "bin").mkdir()
        (h.home / "bin" / "python3").symlink_to(sys.executable)
        path = f"{HOME}/bin" + (f":{PYBIN}" if h is laptop else "")
        (h.home / ".bashrc").write_text(f"export PATH={path}:/usr/local/bin:/usr/bin:/bin\n")
        (h.home / ".profile").write_text(". ~/.bashrc\n")
        (h.home / ".aws").mkdir()
        (h.home / ".aws" / "credentials").write_text(
            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
        )
    (laptop.home / ".ssh").mkdir(exist_ok=True)
    key = laptop.home / ".ssh" / "id_ed25519"
    key.write_bytes(hosts.key.read_bytes())
    os.chmod(key, 0o600)
    src = laptop.home / "ablate"
    checkout(src)
    for module, (fixture, values) in (blocks or {}).items():  # the user's own modules, beside the experiment
        user_block(fixture, src, module=module, **values)
    text = render(
        (REPO / "cluster-onprem.yaml").read_text(),
        {
            "head_ip: 192.168.1.10": f"head_ip: {hosts[1].ip}",
            "worker_ips: [192.168.1.11, 192.168.1.12]": f"worker_ips: [{hosts[2].ip}, {hosts[3].ip}]",
            "ssh_user: ablate": "ssh_user: root",
            "http://192.168.1.5:9000": moto.url,
            "--include-dashboard=false": f"--include-dashboard=false {head_flags}".strip(),
        },
    )
    (src / "cluster-onprem.yaml").write_text(text)


def on_laptop(laptop, cmd, timeout=900):
    """A command the user types on the laptop, in the checkout (a login shell: its PATH, its HOME)."""
    t = time.time()
    p = laptop.run(f". ~/.bashrc && cd ~/ablate && {cmd}", check=False, timeout=timeout)
    return p, time.time() - t


def ray_cmd(laptop, args, timeout=900):
    p, s = on_laptop(laptop, "ray " + args, timeout=timeout)
    assert p.returncode == 0, f"ray {args}\n{p.stdout[-6000:]}\n{p.stderr[-6000:]}"
    return p, s


def live_nodes(head):
    """Ray's own node list, read on the head: {node id: address} of the live nodes."""
    code = (
        "import json, ray; ray.init(address='localhost:6380', logging_level='ERROR'); "
        "print(json.dumps({n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']}))"
    )
    p = head.run(
        f". ~/ablate-env.sh && cd / && ~/ablate-venv/bin/python -c {shlex.quote(code)}",
        check=False,
        env={"HOME": str(HOME)},
    )
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return {}


def wait_joined(hosts, head):
    """Ray's node list on the head once it shows the head and both workers, each at its own address."""
    want, seen = {h.ip for h in hosts[1:]}, {}

    def joined():
        seen.clear()
        seen.update(live_nodes(head))
        return set(seen.values()) == want and len(seen) == 3

    wait_for(joined, 600, f"1 head + 2 workers at {sorted(want)}")
    return dict(seen)


def grid_command(storage, *extra):
    """The grid as a user submits it: `ray exec` on the head, the venv's Python, this cluster's address."""
    return (
        ". ~/ablate-env.sh && cd ~/ablate && ~/ablate-venv/bin/python -m ablate.grid "
        + " ".join([*GRID, *extra])
        + f" storage_path={storage} --address localhost:6380"
    )


def stop_cluster(laptop, hosts):
    """Down as the yaml's header says; nothing of this cluster left on any host still up."""
    ray_cmd(laptop, "exec cluster-onprem.yaml 'sh ~/ablate/cluster-onprem-stop.sh --cluster'")
    ray_cmd(laptop, "down -y cluster-onprem.yaml")
    for h in hosts[1:]:
        if h.init is not None:
            wait_for(lambda h=h: not ray_processes(h), 60, f"no process left on {h.name}: {ray_processes(h)}")


def ray_processes(h):
    """The host's processes but its sshd (and the sessions it serves)."""
    return {pid: cmd for pid, cmd in h.processes().items() if not cmd.startswith("sshd")}


@pytest.mark.slow
@pytest.mark.timeout(1500)
@on_hosts
@with_moto
def test_ray_up_on_hosts_with_their_own_disks_and_s3(tmp_path):
    timings = {}
    with Hosts(tmp_path / "hosts", 4) as hosts:
        laptop, head, workers = hosts[0], hosts[1], hosts[2:]
        moto = Moto(hosts.gateway, tmp_path / "moto.log")
        try:
            prepare(hosts, moto)
            storage = f"s3://{BUCKET}/ablate"

            # 1. `ray up`: the head from the laptop, the workers from the head's autoscaler.
            p, timings["ray up"] = ray_cmd(laptop, "up -y cluster-onprem.yaml")
            t = time.time()
            want = {h.ip for h in hosts[1:]}
            nodes = wait_joined(hosts, head)
            timings["workers joined"] = time.time() - t
            # Each host its own: hostname, disk, /tmp (the code was copied to each; no other host's files).
            for h in hosts[1:]:
                assert hosts.ssh(h, "hostname").stdout.strip() == h.name
                assert (h.home / "ablate" / "ablate" / "grid.py").exists()
                assert (h.tmp / "ray-ablate-onprem").is_dir()
            assert not (laptop.tmp / "ray-ablate-onprem").exists()
            # One token for the cluster, made on the head and on every host of it, never on the laptop.
            tokens = {(h.home / ".ray" / "auth_token").read_text() for h in hosts[1:]}
            assert len(tokens) == 1 and len(tokens.pop()) >= 32 and not (laptop.home / ".ray" / "auth_token").exists()
            # Whoever reaches the head's port without the token runs nothing there.
            code = f"import ray; ray.init(address='{head.ip}:6380'); print('CONNECTED')"
            p = laptop.run(f"cd / && python -c {shlex.quote(code)}", check=False, timeout=300)
            assert p.returncode != 0 and "CONNECTED" not in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
            assert "token" in (p.stdout + p.stderr).lower(), p.stdout[-2000:] + p.stderr[-2000:]

            # 2. The grid, submitted as the yaml's header says, results in the bucket.
            p, timings["grid"] = ray_cmd(laptop, f"exec cluster-onprem.yaml {shlex.quote(grid_command(storage))}")
            out = re.sub(r"\x1b\[[0-9;]*m", "", p.stdout)  # the remote output, among the launcher's own lines
            assert f"results: {storage}/onprem" in [line.strip() for line in out.splitlines()], out[-3000:]
            assert "skipinit" in out and "baseline" in out, out[-3000:]  # the answer: the ablation table

            keys = moto.keys("ablate/onprem/")
            for name in ("history.csv", "trials.csv", "report.html", "report.md", "ablate_experiment.yaml"):
                assert f"ablate/onprem/{name}" in keys, sorted(keys)[:50]
            records = [k for k in keys if k.endswith("/ablate_record.json")]
            trial_dirs = {k.split("/")[3] for k in records}
            assert {d.split("_")[0] for d in trial_dirs} >= {"baseline-d8-lr0.1-s0", "skipinit-d8-lr0.1-s0"}, trial_dirs
            assert any("/wandb/offline-run-" in k for k in keys), "offline W&B runs in the bucket"
            # The trials ran on two hosts: the records' writers (hostnames) and Ray's node ids of the epochs.
            hosts_of = {json.loads(moto.read(k))["process"]["host"] for k in records}
            assert len(hosts_of) >= 2 and hosts_of <= {h.name for h in hosts[1:]}, hosts_of
            history = pd.read_csv(io.StringIO(moto.read("ablate/onprem/history.csv")))
            assert len(history) == 2 * 2 and not history.duplicated(["block", "epoch"]).any(), history
            ips = {nodes[n] for n in history["node"]}
            assert len(ips) >= 2 and ips <= want, (history["node"].tolist(), nodes)

            # 3. A resume from a worker host (no driver ran there; the head's disk is not its): the bucket's
            # records say every trial finished, and nothing runs again.
            runs = {k.split("/")[2] for k in keys if k.split("/")[2].startswith("run-")}
            resume = grid_command(storage, "--resume").replace("localhost:6380", f"{head.ip}:6380")
            p = hosts.ssh(workers[0], resume, check=False)
            assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
            assert "had already finished; nothing to run" in p.stdout + p.stderr, p.stdout[-3000:]
            assert {k.split("/")[2] for k in moto.keys("ablate/onprem/run-")} == runs

            # 4. The report from the laptop, which ran none of it: from the bucket alone.
            p, timings["report"] = on_laptop(
                laptop, f"AWS_ENDPOINT_URL={moto.url} python -m ablate.report {storage}/onprem"
            )
            assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
            assert "<html" in moto.read("ablate/onprem/report.html").lower()

            # 5. Down as the yaml's header says: this cluster's Ray stopped on every host (never `ray stop`),
            # then `ray down`; nothing of it is left on any host.
            t = time.time()
            stop_cluster(laptop, hosts)
            timings["down"] = time.time() - t
        finally:
            moto.stop()
            print("timings (s):", {k: round(v, 1) for k, v in timings.items()})


@pytest.mark.slow
@pytest.mark.timeout(1500)
@on_hosts
@with_moto
def test_worker_host_lost_mid_trial_continues_on_another_from_the_bucket(tmp_path):
    timings = {}
    with Hosts(tmp_path / "hosts", 4) as hosts:
        laptop, head, workers = hosts[0], hosts[1], hosts[2:]
        moto = Moto(hosts.gateway, tmp_path / "moto.log")
        grid = None
        try:
            storage = f"s3://{BUCKET}/ablate"
            exp = f"{storage}/onprem"
            # Trials on the workers only (the yaml's own option), so the lost host is a worker's.
            # Held on whichever worker runs it (that host's own ~/gate), once its checkpoint is in the bucket.
            pattern = "*/held-*/checkpoint_*/ablate_record.json"
            held = {"exp": exp, "pattern": pattern, "gate": "~/gate", "held": "~/held"}
            prepare(hosts, moto, head_flags="--num-cpus=0", blocks={"held_block": ("held_s3", held)})
            _, timings["ray up"] = ray_cmd(laptop, "up -y cluster-onprem.yaml")
            wait_joined(hosts, head)
            for w in workers:
                (w.home / "gate").touch()
            cmd = grid_command(
                storage, "blocks=[baseline,held]", "epochs=3", "block_modules=[held_block]", "checkpoint_period_s=0"
            )
            log = tmp_path / "grid.log"
            t = time.time()
            grid = subprocess.Popen(
                laptop.nsenter(
                    "bash", "-c", f". ~/.bashrc && cd ~/ablate && ray exec cluster-onprem.yaml {shlex.quote(cmd)}"
                ),
                env={"PATH": os.environ["PATH"], "HOME": str(HOME)},
                stdout=open(log, "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

            def held_on():
                return next((w for w in workers if (w.home / "held").exists()), None) or grid.poll() is not None

            wait_for(held_on, 600, "the held trial held after its first checkpoint in the bucket")
            assert grid.poll() is None, log.read_text()[-3000:]
            lost = next(w for w in workers if (w.home / "held").exists())
            other = next(w for w in workers if w is not lost)

            def records():
                return {k: json.loads(v) for k, v in records_in(moto, "ablate/onprem/").items()}

            def baseline_done():
                return any(
                    k.split("/")[3].startswith("baseline-") and all(m["done"] for m in r["members"])
                    for k, r in records().items()
                )

            wait_for(baseline_done, 300, "the baseline trial finished (on the other worker)")

            def newest_baseline(recs):
                return max(
                    ((k, r) for k, r in recs.items() if k.split("/")[3].startswith("baseline-")),
                    key=lambda kr: kr[1]["written"],
                )

            finished = newest_baseline(records())
            assert all(m["done"] for m in finished[1]["members"]) and finished[1]["process"]["host"] == other.name

            # The host goes: its cable cut and every process on it killed, mid-trial.
            (other.home / "gate").unlink()  # where the trial continues, nothing holds it
            lost.lose()
            assert grid.wait(timeout=900) == 0, log.read_text()[-6000:]
            timings["grid with a lost host"] = time.time() - t

            history = pd.read_csv(io.StringIO(moto.read("ablate/onprem/history.csv")))
            assert sorted(map(tuple, history[["block", "epoch"]].values.tolist())) == [
                (b, e) for b in ("baseline", "held") for e in (1, 2, 3)
            ], history
            after = records()
            held_records = {k: r for k, r in after.items() if k.split("/")[3].startswith("held-")}
            newest = max(held_records.values(), key=lambda r: r["written"])
            assert newest["process"]["host"] == other.name and all(m["done"] for m in newest["members"]), newest
            # The finished trial untouched: its newest record is still the one it finished with.
            assert newest_baseline(after) == finished
            t = time.time()
            stop_cluster(laptop, hosts)
            timings["down"] = time.time() - t
        finally:
            if grid is not None and grid.poll() is None:
                os.killpg(grid.pid, 9)
            moto.stop()
            print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
