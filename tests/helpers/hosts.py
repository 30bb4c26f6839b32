"""Several hosts on this machine, for the system tests of the cluster path (``ray up``, S3, a lost host).

Each host is a network namespace on a bridge of its own (an address of its own, 10.x.y.10+i/24), a UTS
namespace (its own hostname), a mount namespace (its own ``/tmp``, ``/dev/shm`` and home directory, on a
directory of its own: its local disk) and a PID namespace (its own process list: Ray's ``ray stop`` and
``psutil`` on a host see only that host's processes), with its own sshd that takes a key the test makes.
What the hosts share with this machine is what machines of one lab share from their image: ``/usr``,
``/etc`` and the Python install (rebound into each private home where it lives under ``$HOME``).  The
repository itself is hidden from every host: code reaches them as it does on real machines (``ray up``'s
rsync from a user's checkout), and there is no shared filesystem between them.

Traffic stays between the harness's namespaces and this machine's side of the bridge (where a test runs
its S3 server): a host's default route points at an address nobody holds (Ray finds a node's own address
from the route to the internet; no packet leaves the bridge), and nothing forwards or masquerades.  Every
process a host runs is in its PID namespace, and teardown kills each by pid, then the namespace's init;
nothing outside the harness's namespaces (another test's Ray, a user's) is touched.

``Hosts.skip_reason()`` is the one line a test skips with where the kernel refuses namespaces (not root,
no ``unshare``, no veth/bridge) or ``sshd`` is missing (``.ci/run`` installs it)."""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parents[2]
HOME = Path(os.path.expanduser("~")).resolve()

# PID 1 of a host: it holds the namespaces and reaps whatever daemons (sshd, Ray) leave to it.
INIT = (
    "import os, time\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(0.5)\n"
)


def _sh(*cmd, check=True, **kw):
    return subprocess.run([str(c) for c in cmd], check=check, capture_output=True, text=True, timeout=60, **kw)


def _python_roots():
    """The Python install every host uses (this interpreter's prefixes, as real paths)."""
    return sorted({Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


class Host:
    def __init__(self, hosts: "Hosts", i: int):
        self.hosts, self.i = hosts, i
        self.name = f"{hosts.prefix}-h{i}"
        self.ip = str(hosts.net.network_address + 10 + i)
        self.disk = hosts.root / self.name  # this host's local disk (its home, /tmp) seen from here
        self.home = self.disk / "home"  # mounted at $HOME on the host
        self.tmp = self.disk / "tmp"  # mounted at /tmp on the host
        self.veth = f"{hosts.tag}v{i}"  # this machine's end of the host's cable
        self.unshare = None  # the `unshare` process; its child is the host's PID 1
        self.init = None
        self.pidns = None

    # --- from this machine into the host -------------------------------------------------------------
    def nsenter(self, *cmd):
        return ["nsenter", "-t", str(self.init), "-n", "-m", "-u", "-p", "--", *map(str, cmd)]

    def run(self, cmd: str, check=True, timeout=120, env=None):
        """Run a shell command on the host, as root, with the host's own HOME (what a login there sees)."""
        full = {"PATH": os.environ["PATH"], "HOME": str(HOME), "LANG": "C.UTF-8", **(env or {})}
        p = subprocess.run(self.nsenter("bash", "-c", cmd), capture_output=True, text=True, timeout=timeout, env=full)
        if check and p.returncode != 0:
            raise AssertionError(f"on {self.name}: {cmd}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
        return p

    def pids(self):
        """Every process in this host's PID namespace (its pids as this machine sees them)."""
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if os.readlink(p / "ns" / "pid") == self.pidns:
                        out.append(int(p.name))
                except OSError:
                    continue
        return out

    def processes(self):
        """{pid: command line} of the host's processes but its init."""
        out = {}
        for pid in self.pids():
            if pid == self.init:
                continue
            try:
                out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
        return out

    # --- its life ------------------------------------------------------------------------------------
    def start(self):
        for d in (self.home, self.tmp, self.home / ".sshd"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tmp, 0o1777)
        self.unshare = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--uts",
                "--mount",
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                sys.executable,
                "-c",
                INIT,
            ],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while self.init is None:
            try:
                kids = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children").read_text().split()
            except OSError:
                kids = []
            if kids:
                self.init = int(kids[0])
            elif self.unshare.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"unshare exited {self.unshare.returncode}: namespaces refused")
            else:
                time.sleep(0.05)
        # The child's PID namespace is set once it has exec'd; wait for that rather than for the clock.
        while os.readlink(f"/proc/{self.init}/ns/pid") == os.readlink("/proc/self/ns/pid"):
            time.sleep(0.05)
        self.pidns = os.readlink(f"/proc/{self.init}/ns/pid")
        self._network()
        self._disks()
        self.run(f"hostname {self.name}")
        if self.hosts.with_sshd:
            self._sshd()

    def _network(self):
        h, net = self.hosts, self.hosts.net
        peer = f"{h.tag}p{self.i}"
        _sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", peer)
        _sh("ip", "link", "set", peer, "netns", self.init)
        _sh("ip", "link", "set", self.veth, "master", h.bridge, "up")
        self.run(
            f"ip link set lo up && ip link set {peer} name eth0 && "
            f"ip addr add {self.ip}/{net.prefixlen} dev eth0 && ip link set eth0 up && "
            # A gateway nobody holds: the route Ray asks for its own address, and a dead end.
            f"ip route add default via {net.broadcast_address - 1}"
        )

    # What a host shares with the others: nothing but what the lab's image holds (a subclass shares more: a home on
    # NFS, the checkout).
    def home_source(self) -> Path:
        """The directory mounted at $HOME on this host: its own."""
        return self.home

    def shares_checkout(self) -> bool:
        """Whether the repository is visible on this host (it is not: code arrives as ray up copies it)."""
        return False

    def _disks(self):
        q = shlex.quote
        home = self.home_source()
        steps = []
        # The Python install stays where it is: rebind the parts of it under $HOME into the host's home.
        for root in _python_roots():
            if root.is_relative_to(HOME) and root != HOME:
                inner = home / root.relative_to(HOME)
                inner.mkdir(parents=True, exist_ok=True)
                steps.append(f"mount --rbind {q(str(root))} {q(str(inner))}")
        steps.append(f"mount --rbind {q(str(home))} {q(str(HOME))}")
        # No shared filesystem: the repository reaches a host only as ray up copies it (hidden before the
        # private /tmp is mounted: a checkout under /tmp is a mount point only until then).
        if not self.shares_checkout() and not any(r.is_relative_to(REPO) for r in _python_roots()):
            steps.append(f"mount -t tmpfs -o size=1m tmpfs {q(str(REPO))}")
        # Names as a lab's DNS gives them: every host in /etc/hosts, and no nameserver (the machine's own is
        # unreachable from the bridge: each lookup would wait for it, ~6 s for every srun, munged or ssh).
        etc = self.disk / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"{h.ip} {h.name}\n" for h in self.hosts.hosts))
        (etc / "resolv.conf").write_text("options timeout:1 attempts:1\n")
        steps += [
            f"mount --bind {q(str(etc / 'hosts'))} /etc/hosts",
            f"mount --bind {q(str(etc / 'resolv.conf'))} /etc/resolv.conf",
        ]
        steps += [f"mount --bind {q(str(self.tmp))} /tmp", "mount -t tmpfs -o size=2g tmpfs /dev/shm"]
        self.run(" && ".join(steps))

    def _sshd(self):
        d = self.home / ".sshd"
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "host_key")
        shutil.copy(self.hosts.public_key, d / "authorized_keys")
        # The files sshd reads, as the host sees them (under its home: its /tmp is its own).
        seen = HOME / ".sshd"
        (d / "sshd_config").write_text(
            f"ListenAddress {self.ip}\nPort 22\nHostKey {seen}/host_key\nAuthorizedKeysFile {seen}/authorized_keys\n"
            f"PidFile {seen}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nMaxStartups 100\nMaxSessions 100\n"
            "AcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\n"
        )
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory (Debian's unit makes it)
        self.run(f"{SSHD} -f {seen}/sshd_config -E {seen}/sshd.log")  # daemonizes: its parent is the host's init

    def lose(self):
        """The host is gone at once: its cable cut, every process on it killed (a power cut)."""
        _sh("ip", "link", "del", self.veth, check=False)
        self.kill()

    def kill(self):
        if self.init is None:
            return
        for pid in self.pids():
            if pid != self.init:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.kill(self.init, signal.SIGKILL)  # and the kernel ends whatever is left in its namespace
        except ProcessLookupError:
            pass
        if self.unshare is not None:
            self.unshare.wait(timeout=30)
        deadline = time.time() + 30
        while self.pids() and time.time() < deadline:
            time.sleep(0.1)
        _sh("ip", "link", "del", self.veth, check=False)
        self.init = None


class Hosts:
    """``n`` hosts (``hosts[i]``), with a key (``key``) each host's sshd takes for root.  A context manager:
    everything it started is stopped at exit."""

    host_class = Host  # what each host is (a subclass shares more of the machine: ``helpers.slurm_hosts``)
    with_sshd = True  # each host runs its own sshd (ray up logs in over SSH; SLURM needs none)

    def __init__(self, root: Path, n: int):
        self.root = Path(root)
        self.tag = "ab" + uuid.uuid4().hex[:6]  # interface names: at most 15 characters
        self.prefix = self.tag
        self.bridge = f"{self.tag}br"
        self.net = self._free_net()
        self.gateway = str(self.net.network_address + 1)  # this machine's address on the bridge
        self.key = self.root / "id_ed25519"
        self.public_key = self.root / "id_ed25519.pub"
        self.hosts = [self.host_class(self, i) for i in range(n)]

    @staticmethod
    def skip_reason():
        if os.geteuid() != 0:
            return "the multi-host harness needs root (network, mount and PID namespaces)"
        for tool in ("unshare", "nsenter", "ip", "ssh", "ssh-keygen", "rsync"):
            if not shutil.which(tool):
                return f"{tool} is missing (.ci/run installs openssh-server, rsync and iproute2)"
        if not os.path.exists(SSHD):
            return "sshd is missing (.ci/run installs openssh-server)"
        p = subprocess.run(
            ["unshare", "--net", "--uts", "--mount", "--pid", "--fork", "--mount-proc", "true"],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            return f"the kernel refuses namespaces: {p.stderr.strip().splitlines()[-1:]}"
        return None

    def _free_net(self):
        used = _sh("ip", "-o", "-4", "addr").stdout
        for _ in range(100):
            b = uuid.uuid4().int
            net = ipaddress.ip_network(f"10.{100 + b % 100}.{(b >> 8) % 256}.0/24")
            if f" 10.{100 + b % 100}.{(b >> 8) % 256}." not in used:
                return net
        raise RuntimeError("no free 10.x.y.0/24 for the test bridge")

    def __getitem__(self, i):
        return self.hosts[i]

    def __len__(self):
        return len(self.hosts)

    def __enter__(self):
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ablate-test", "-f", self.key)
            _sh("ip", "link", "add", self.bridge, "type", "bridge")
            _sh("ip", "addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
            _sh("ip", "link", "set", self.bridge, "up")
            for h in self.hosts:
                h.start()
            for h in self.hosts if self.with_sshd else ():
                self.wait_ssh(h)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def ssh(self, host: Host, cmd: str, check=True, timeout=300, key=None):
        """``cmd`` on ``host`` over its sshd, as a user's ssh would (a login shell)."""
        p = subprocess.run(
            [
                "ssh",
                "-i",
                str(key or self.key),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                f"root@{host.ip}",
                cmd,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"ssh {host.name}: {cmd}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
        return p

    def wait_ssh(self, host: Host, timeout=30):
        deadline = time.time() + timeout
        while True:
            p = self.ssh(host, "hostname", check=False, timeout=30)
            if p.returncode == 0 and p.stdout.strip() == host.name:
                return
            if time.time() > deadline:
                raise AssertionError(f"sshd on {host.name} ({host.ip}) never answered: {p.stderr[-500:]}")
            time.sleep(0.2)

    def __exit__(self, *exc):
        for h in self.hosts:
            try:
                h.kill()
            except Exception:  # noqa: BLE001 - the others still go
                pass
        _sh("ip", "link", "del", self.bridge, check=False)
