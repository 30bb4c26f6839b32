"""The Ray cluster a grid runs on: joining it, what it has and can add, what each trial asks of it.

A trial's GPU request follows from what the cluster has now or its autoscaler can add (node
types read from the GCS, where the autoscaler reports them, or from the cluster launcher's
config on the head); a request no node could ever hold is an error before any trial starts.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import yaml

from ablate.errors import AblateError, ClusterError
from ablate.run.ray_compat import LOCAL_SYSTEM_CONFIG, autoscaler_node_groups
from ablate.spec.config import ExperimentConfig

__all__ = [
    "Capacity",
    "ClusterError",
    "check_devices",
    "check_address",
    "gpu_notice",
    "ray_log_file",
    "start",
    "autoscaler_node_types",
    "cluster_capacity",
    "trial_resources",
    "connect",
    "BOOTSTRAP_CONFIG",
]

# Where the cluster launcher (`ray up`) leaves its config on the head node.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


@dataclass
class Capacity:
    """What the Ray cluster has now, and what its autoscaler can add (node shapes)."""

    gpus_now: float
    shapes: List[Dict[str, float]]  # resources of every live node and every node type it can add
    autoscaler: Optional[str] = None  # where the autoscaler's node types were read, if anywhere

    @property
    def gpu_possible(self) -> bool:
        return self.gpus_now > 0 or any(s.get("GPU", 0) > 0 for s in self.shapes)


def autoscaler_node_types() -> Tuple[List[Dict[str, float]], Optional[str]]:
    """Resources of the worker node types the cluster's autoscaler can start (none: [], None).

    Ray records the autoscaler's node groups in the GCS where the autoscaler reports them
    (``get_max_resources_from_cluster_config`` reads the same record for Ray Train and Data);
    the cluster launcher's autoscaler (``ray up``) reads its node types from
    ``~/ray_bootstrap_config.yaml`` on the head, where the grid's driver runs.
    """
    groups = autoscaler_node_groups()
    if groups is not None:
        return groups, "the GCS cluster config"
    path = os.path.expanduser(BOOTSTRAP_CONFIG)
    try:
        with open(path) as f:
            launcher = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return [], None
    head = launcher.get("head_node_type")
    types = launcher.get("available_node_types") or {}
    shapes = [
        {k: float(v) for k, v in (t.get("resources") or {}).items()}
        for name, t in types.items()
        if name != head and int(t.get("max_workers", launcher.get("max_workers", 0)) or 0) > 0
    ]
    return shapes, path


def cluster_capacity() -> Capacity:
    import ray  # Ray only once the driver starts it (a dry run, a finished study's resume never do)

    shapes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    scalable, source = autoscaler_node_types()
    return Capacity(gpus_now=ray.cluster_resources().get("GPU", 0.0), shapes=shapes + scalable, autoscaler=source)


def trial_resources(cfg: ExperimentConfig, cap: Capacity) -> Dict[str, float]:
    """CPUs and (fractional) GPUs per group (a Tune trial: ``cpus_per_trial`` is per group), from what the cluster
    has or its autoscaler can add.

    An explicit ``gpus_per_trial`` always wins; unset, trials take ``1/trials_per_gpu`` GPU where
    a GPU exists or can be added (the trials then wait for the autoscaler), else none.  A request
    no node of the cluster, present or addable, could ever hold is a ``ClusterError``.
    """
    gpus = cfg.gpus_per_trial
    if gpus is None:
        gpus = 1.0 / cfg.trials_per_gpu if cap.gpu_possible else 0.0
    if gpus > 0 and not cap.gpu_possible:
        raise ClusterError(
            f"key 'gpus_per_trial' is {gpus:g} but the Ray cluster has no GPU and its autoscaler "
            "can add none; allowed here: 0, or leave it unset (trials then run on CPUs)"
        )
    if not any(s.get("CPU", 0) >= cfg.cpus_per_trial and s.get("GPU", 0) >= gpus for s in cap.shapes):
        most = max((s.get("CPU", 0) for s in cap.shapes if s.get("GPU", 0) >= gpus), default=0)
        raise ClusterError(
            f"key 'cpus_per_trial' is {cfg.cpus_per_trial:g} but no node of the Ray cluster "
            f"(nor any its autoscaler can add) has that many CPUs beside {gpus:g} GPU; "
            f"allowed here: up to {most:g}"
        )
    return {"cpu": cfg.cpus_per_trial, "gpu": gpus}


class _FirstLine(logging.Formatter):
    """A log record's first line, without its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return (record.getMessage().strip().splitlines() or [""])[0][:300]


def log_to_file(path: str) -> None:
    """Ray's and Tune's own log lines go to ``path``; only their errors still reach the terminal.

    Ray configures its loggers (``ray`` and below) with handlers of its own on import and on
    ``ray.init``; those that write to the terminal are replaced by the file.
    """
    import ray  # noqa: F401 -- its loggers exist once imported

    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    errors = logging.StreamHandler()
    errors.setLevel(logging.ERROR)
    errors.setFormatter(_FirstLine())  # the traceback is in the file (a storage blip: one per retry, pages)
    for name in [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
        if not logger.propagate or name == "ray":
            logger.addHandler(to_file)
            logger.addHandler(errors)


def ray_log_file() -> str:
    """A new file for Ray's own log lines (moved into the results at the end)."""
    try:
        fd, path = tempfile.mkstemp(prefix="ablate-ray-", suffix=".log")
        os.close(fd)
        return path
    except OSError as e:
        raise ClusterError(
            f"no usable temporary directory ({tempfile.gettempdir()}: {e.__class__.__name__}); set "
            "TMPDIR to a writable directory"
        ) from None


def connect(address: Optional[str], block_modules: List[str] = (), log_path: Optional[str] = None) -> Capacity:
    """Join (or start) Ray and read what it can give.

    A user's block modules (imported in this driver already) travel to every node with the
    job's runtime env (``py_modules``: Ray uploads them once; every worker gets them on its path).
    With ``log_path``, Ray's own log lines go there (``log_to_file``).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no job metadata leaves the cluster
    import ray  # here: after the environment Ray reads on import

    if log_path:
        log_to_file(log_path)
    runtime_env = {"py_modules": [_module_path(m) for m in block_modules]} if block_modules else {}
    runtime_env["worker_process_setup_hook"] = "ablate.run.ray_compat.quiet_worker"  # every worker, at start
    try:
        if address:
            ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
        elif not ray.is_initialized():
            # Local mode: this machine's CPUs and GPUs; no dashboard (and never off localhost).
            ray.init(
                include_dashboard=False,
                dashboard_host="127.0.0.1",
                log_to_driver=True,
                runtime_env=runtime_env,
                _system_config=LOCAL_SYSTEM_CONFIG,
            )
    except Exception as e:  # an unusable HOME or temp directory, a cluster that refuses this driver
        detail = (str(e).strip().splitlines() or [""])[-1][:200]
        raise ClusterError(
            f"Ray could not start{f' (address {address})' if address else ''}: {e.__class__.__name__}: "
            f"{detail}; check that HOME and TMPDIR are writable directories, and the address"
        ) from None
    if log_path:
        log_to_file(log_path)  # ray.init may have added handlers of its own
    return cluster_capacity()


def _module_path(name: str) -> str:
    """The file (single-file module) or directory (package) of an imported module, for ``py_modules``."""
    module = sys.modules[name.split(".")[0]]
    return module.__path__[0] if hasattr(module, "__path__") else module.__file__


def check_devices(cfg: ExperimentConfig, address: Optional[str]) -> None:
    """Local mode: a GPU asked for where there is none is an error, before Ray starts."""
    if address:
        return  # the cluster's GPUs are checked once connected, before any trial starts
    import torch  # only in local mode, where a GPU is asked about (a cluster's are read from Ray)

    if not torch.cuda.is_available():
        if (cfg.gpus_per_trial or 0) > 0:
            raise ClusterError(
                f"key 'gpus_per_trial' is {cfg.gpus_per_trial:g} but this machine has no GPU; "
                "allowed here: 0, or leave it unset (trials then run on the CPU)"
            )
        if cfg.device == "cuda":
            raise ClusterError("key 'device' is 'cuda' but this machine has no GPU; allowed here: auto, cpu")


def check_address(address: Optional[str], timeout_s: float = 10.0) -> None:
    """A cluster address that nothing answers is an error within seconds (Ray would retry for minutes)."""
    if address and address.startswith("ray://"):
        raise ClusterError(
            f"--address {address}: Ray Client (ray://) is not supported (a grid outlives a client "
            "connection); allowed: HOST:PORT of the head, or auto on a node of the cluster "
            "(ray exec, ray job submit, or ssh to the head)"
        )
    if address and "://" in address:
        raise ClusterError(
            f"--address {address}: a URL is not a Ray cluster address (http:// is the dashboard's, "
            "for `ray job submit`); allowed: HOST:PORT of the head's GCS (`ray start --head` prints it), "
            "or auto"
        )
    if not address or address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        conn = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s)
    except (OSError, ValueError) as e:
        raise ClusterError(
            f"--address {address}: no Ray cluster answers there ({e.__class__.__name__}); "
            "allowed: HOST:PORT of a running head (`ray start --head`, `ray up cluster.yaml`), "
            "or auto"
        ) from None
    with conn:
        what = _not_grpc(conn, timeout_s)
    if what:  # Ray itself would wait ~90 s for a GCS there
        raise ClusterError(
            f"--address {address}: something answers there, but not a Ray cluster's GCS ({what}); "
            "allowed: HOST:PORT of the head's GCS (`ray start --head` prints it; default port 6379), "
            "or auto"
        )


# The client's HTTP/2 connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _not_grpc(conn, timeout_s: float) -> Optional[str]:
    """Why what answers on ``conn`` is not a gRPC server (Ray's GCS is one), or None if it is.

    An HTTP/2 server's first frame is SETTINGS (type 4, on stream 0), sent once the client's preface
    arrives; a web server answers HTTP/1.x or closes, most other servers say something else or nothing.
    Skipped where Ray's gRPC runs over TLS (``RAY_USE_TLS``): the preface would then be no TLS hello."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None
    head = b""
    try:
        conn.settimeout(timeout_s)
        conn.sendall(_H2_PREFACE)
        while len(head) < 9:
            chunk = conn.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except OSError as e:
        return (
            f"it did not answer HTTP/2 within {timeout_s:g} s ({e.__class__.__name__})"
            if not head
            else f"it answered {head[:20]!r}"
        )
    if len(head) == 9 and head[3] == 4 and head[5:9] == bytes(4):
        return None
    if head.startswith((b"HTTP/", b"<")):  # a status line, or (to an HTTP/2.0 request line) an HTML error page
        return "it answered HTTP/1.x: a web server (the dashboard is one: its port is not the GCS's)"
    return f"it answered {head[:20]!r}" if head else "it closed the connection"


def gpu_notice(resources: Dict[str, float], cap: Capacity, address: Optional[str]) -> Optional[str]:
    """What the grid says of GPUs it will not have at once: what is known, said as known."""
    if resources["gpu"] == 0 and address:  # an autoscaler read, or none
        scaler = (
            f"its autoscaler ({cap.autoscaler}) can add none"
            if cap.autoscaler
            else f"no autoscaler configuration found (in the GCS or at {BOOTSTRAP_CONFIG})"
        )
        return (
            f"notice: no GPU node now, and {scaler}: trials train on CPUs; set gpus_per_trial to wait for GPU workers"
        )
    if resources["gpu"] > 0 and cap.gpus_now == 0:
        return (
            f"notice: no GPU node yet; trials ask for {resources['gpu']:g} GPU and wait for the autoscaler "
            f"(node types from {cap.autoscaler})"
        )
    return None


def start(cfg: ExperimentConfig, address: Optional[str], verbose: bool, on_connect) -> Tuple[Capacity, Dict, str]:
    """Ray for a grid: joined (or started), what it can give checked against what ``cfg`` asks, Ray's log
    going to a new file (unless ``verbose``); ``on_connect()`` once Ray is up (``ray.init`` puts its own
    signal handlers in).  (capacity, the trial's resources, the log file); nothing is left behind on an error."""
    ray_log = ray_log_file()
    try:
        cap = connect(address, cfg.block_modules, log_path=None if verbose else ray_log)
        on_connect()  # a signal that came while Ray started stops the run here
        return cap, trial_resources(cfg, cap), ray_log
    except (AblateError, KeyboardInterrupt):
        os.remove(ray_log)
        raise
