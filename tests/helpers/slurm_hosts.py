"""A SLURM cluster on the multi-host harness (``helpers.hosts``), as a lab runs one: ``login`` (``hosts[0]``) runs
slurmctld and is where a user types ``sbatch``; each compute node (``hosts[1:]``) runs slurmd, its ``NodeName``
the host's name and its ``NodeAddr`` the host's address; every host runs its own munged with the cluster's one
key (its socket in the host's own ``/tmp``).

What the hosts share, as a lab's machines do over NFS: the home directory (one directory mounted at ``$HOME`` on
every host: the experiment's storage, the job's working directory and output, ``~/.ray/auth_token``, the SLURM
config and munge key) and the checkout (the editable install points into it, as a user's checkout on the shared
home).  What each keeps to itself: ``/tmp`` (Ray's temp dir, SLURM's spool, munge's socket), ``/dev/shm``, its
network, hostname and process list.  No sshd: slurmd runs a job's steps.  slurmctld runs on a host of the
harness, not on this machine: its own network namespace, so its default ports never meet another test's
cluster, and it ends with its namespace.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from helpers.hosts import HOME, Host, Hosts

MUNGE = "/tmp/munge"  # each host's own (its private /tmp)
SPOOL = "/tmp/slurm"  # each host's own: slurmd's spool, pid and log; slurmctld's state on the login node

CONF = """ClusterName={cluster}
SlurmctldHost={ctl}({ctl_ip})
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket={munge}/munge.sock
CredType=cred/munge
StateSaveLocation={spool}/state
SlurmdSpoolDir={spool}/spool
SlurmctldPidFile={spool}/slurmctld.pid
SlurmdPidFile={spool}/slurmd.pid
SlurmctldLogFile={spool}/slurmctld.log
SlurmdLogFile={spool}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=10
{nodes}
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "GONE")


class SlurmHost(Host):
    """A host whose home is the cluster's shared one, with the checkout visible (both as on NFS)."""

    def home_source(self) -> Path:
        return self.hosts.shared_home

    def shares_checkout(self) -> bool:
        return True


class SlurmHosts(Hosts):
    """``login`` and ``n_compute`` compute nodes of ``cpus`` CPUs each; ``sh(cmd)`` runs a command on the login node
    with the cluster's ``SLURM_CONF``; ``here(path)`` is a path of the shared home as this machine sees it."""

    host_class = SlurmHost
    with_sshd = False

    def __init__(self, root: Path, n_compute: int, cpus: int = 2, mem_mb: int = 3000):
        super().__init__(root, 1 + n_compute)
        self.shared_home = self.root / "shared-home"
        self.cpus, self.mem_mb = cpus, mem_mb
        self.cluster = f"abl{self.tag[2:]}"
        self.conf = f"{HOME}/slurm/slurm.conf"  # as every host sees it (the shared home)
        self.env = {"SLURM_CONF": self.conf}

    @property
    def login(self) -> Host:
        return self.hosts[0]

    @property
    def compute(self):
        return self.hosts[1:]

    def here(self, host_path: str) -> Path:
        """A path of the shared home as the hosts see it (under ``$HOME``), as this machine sees it."""
        return self.shared_home / Path(host_path).relative_to(HOME)

    def __enter__(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.shared_home.mkdir(parents=True, exist_ok=True)
        super().__enter__()
        try:
            self._slurm()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _slurm(self):
        d = self.here(f"{HOME}/slurm")
        d.mkdir(exist_ok=True)
        (d / "munge.key").write_bytes(os.urandom(1024))
        os.chmod(d / "munge.key", 0o400)
        nodes = "\n".join(
            f"NodeName={h.name} NodeAddr={h.ip} CPUs={self.cpus} RealMemory={self.mem_mb} State=UNKNOWN"
            for h in self.compute
        )
        (d / "slurm.conf").write_text(
            CONF.format(
                cluster=self.cluster, ctl=self.login.name, ctl_ip=self.login.ip, munge=MUNGE, spool=SPOOL, nodes=nodes
            )
        )
        for h in self.hosts:  # each host its own munged, the one key (--origin: it never resolves its own name)
            h.run(
                f"mkdir -p {MUNGE} {SPOOL}/state {SPOOL}/spool && chmod 0755 {MUNGE} && "
                f"munged --force --socket={MUNGE}/munge.sock --key-file={HOME}/slurm/munge.key "
                f"--pid-file={MUNGE}/munged.pid --log-file={MUNGE}/munged.log --seed-file={MUNGE}/munge.seed "
                f"--origin={h.ip}"
            )
        self.login.run(f"slurmctld -f {self.conf}", env=self.env)
        for h in self.compute:
            h.run(f"slurmd -f {self.conf}", env=self.env)
        deadline = time.time() + 90
        while (states := self.sh("sinfo -h -N -o '%N %t'").split()).count("idle") < len(self.compute):
            if time.time() > deadline:
                raise AssertionError(f"SLURM nodes not idle: {states}\n{self.logs()}")
            time.sleep(0.5)

    def sh(self, cmd: str, check: bool = False, timeout: float = 60, env=None) -> str:
        """A command on the login node, with the cluster's SLURM_CONF (its stdout)."""
        return self.login.run(cmd, env={**self.env, **(env or {})}, check=check, timeout=timeout).stdout

    def job_state(self, job: str) -> str:
        m = re.search(r"JobState=(\w+)", self.sh(f"scontrol show job {job}"))
        return m.group(1) if m else "GONE"

    def logs(self) -> str:
        out = []
        for h in self.hosts:
            for name in ("slurmctld.log", "slurmd.log"):
                p = h.tmp / "slurm" / name
                if p.exists():
                    out.append(f"--- {h.name} {name}\n" + p.read_text()[-3000:])
        return "\n".join(out)
