"""A local multi-node Ray cluster (``ray start`` on 127.0.0.1, each node with a fake GPU): every process it
starts is ours, found by its own temp dir and stopped by pid (``ray stop`` would stop every Ray here)."""

import os
import shutil
import signal
import subprocess
import uuid

from helpers.cli import RAY, clean_env, free_port, processes


class LocalCluster:
    """A head and worker nodes started with `ray start` on 127.0.0.1, each with a fake GPU."""

    def __init__(self):
        self.temp_dir = f"/tmp/abl-{uuid.uuid4().hex[:8]}"
        # The same auth mode for every command: a head turns token auth on by itself when
        # ~/.ray/auth_token exists, and a node or driver without it then fails after ~20 s.
        self.env = clean_env(RAY_AUTH_MODE="disabled")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes = {}

    def _start(self, args, name):
        before = set(processes())
        subprocess.run(
            [
                RAY,
                "start",
                *args,
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--num-gpus=1",
                "--disable-usage-stats",
            ],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        # Ours by name (our temp dir), and the agents our raylet started (renamed ray::...): never another
        # test's processes that started meanwhile (pytest-xdist runs two test files at once).
        new = {pid: v for pid, v in processes().items() if pid not in before}
        ours = {pid for pid, (_, cmd) in new.items() if self.temp_dir in cmd}
        self.nodes[name] = ours | {pid for pid, (ppid, _) in new.items() if ppid in ours}

    def start(self, workers=1):
        self._start(
            ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}"], "head"
        )
        for i in range(workers):
            self._start([f"--address={self.address}"], f"worker{i}")
        return self

    def node_raylet(self, name):
        procs = processes()
        return next(pid for pid in self.nodes[name] if pid in procs and "/raylet/raylet" in procs[pid][1])

    def kill_node(self, name):
        """Lose a node: SIGKILL its raylet, the processes it started, and its other daemons."""
        raylet = self.node_raylet(name)
        children = [pid for pid, (ppid, _) in processes().items() if ppid == raylet]
        for pid in [raylet, *children, *self.nodes[name]]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self):
        """Stop our nodes only: the daemons we saw start, and the workers their raylets started."""
        ours = set().union(*self.nodes.values())
        procs = processes()
        ours |= {pid for pid, (ppid, _) in procs.items() if ppid in ours}
        ours |= {pid for pid, (_, cmd) in procs.items() if self.temp_dir in cmd}
        for pid in ours:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
