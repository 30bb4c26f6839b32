"""Where an experiment lives: a local directory or a URI (``s3://``, ``gs://``, ``file://``).

One code path for both, through pyarrow's filesystems (the ones Ray Tune itself syncs with), so
the checks that keep experiments apart (identity, "never mixed") hold on shared storage too.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
import sys
import threading
import time
from typing import Iterable, List, NamedTuple, Optional, Tuple
from urllib.parse import unquote, urlparse

from ablate.errors import LockedError, UsageError, first_line

__all__ = [
    "is_uri",
    "join",
    "has_files",
    "list_dirs",
    "list_files",
    "read_bytes",
    "read_text",
    "write_text",
    "delete",
    "upload",
    "check_writable",
    "ExperimentLock",
    "LockedError",
    "EXPERIMENT_FILE",
    "HISTORY_FILE",
    "TRIALS_FILE",
    "REPORT_HTML",
    "REPORT_MD",
    "TIMING_FILE",
    "STATE_FILE",
    "RECORD_FILE",
    "STOPPED_FILE",
    "RAY_LOG",
    "OUTPUTS",
    "RUN_PREFIX",
    "filesystem",
    "failure",
    "remedy",
    "trial_failure",
    "Entry",
    "entries",
    "read_from",
    "delete_dir",
    "local_fs",
    "preflight",
    "COMPARE_HTML",
    "COMPARE_MD",
    "COMPARE_STATE",
]


def _pafs():
    """pyarrow's filesystems (those Ray Tune syncs with), imported on first use: ~0.2 s that a ``--help``, a
    one-line config error or a dry run never pays."""
    import pyarrow.fs  # the reason is this function's docstring

    return pyarrow.fs


# Every file name ablate writes, once.
EXPERIMENT_FILE = "ablate_experiment.yaml"  # the experiment's identity (settings); read by --resume and the report
HISTORY_FILE = "history.csv"  # one row per trial and epoch
TRIALS_FILE = "trials.csv"  # one row per trial of the grid
REPORT_HTML, REPORT_MD = "report.html", "report.md"
RUN_PREFIX = "run-"  # each Tune run of a study: <experiment>/run-<UTC time>, never a trial's name
TIMING_FILE = "grid_timing.json"  # the grid's wall time (python -m ablate.bench --grid)
RAY_LOG = "ray.log"  # Ray's and Tune's own log lines of the last run
STATE_FILE = "state.pt"  # a trial's trainer state (in each checkpoint directory)
RECORD_FILE = "ablate_record.json"  # a trial's record, beside it (ablate.study.records)
STOPPED_FILE = "ablate_stopped.json"  # the scheduler (ASHA) stopped the trial: in its trial directory
COMPARE_HTML, COMPARE_MD = "compare.html", "compare.md"  # ablate.compare's pages (in AFTER, or --out)
COMPARE_STATE = "compare.json"  # what an --until-resolved comparison has looked at, in order
OUTPUTS = (HISTORY_FILE, TRIALS_FILE, REPORT_HTML, REPORT_MD, TIMING_FILE, RAY_LOG)  # what the driver writes at the end


def is_uri(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def filesystem(path: str) -> Tuple[object, str]:
    """The pyarrow filesystem of ``path`` and the path within it."""
    pafs = _pafs()
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


class Entry(NamedTuple):
    """One file or directory of a listing: its path within its filesystem, its name, size and modification time."""

    path: str
    base_name: str
    size: Optional[int]
    mtime_ns: Optional[int]
    is_file: bool
    is_dir: bool


def entries(fs, root: str, recursive: bool = True) -> List[Entry]:
    """What is under ``root`` of the pyarrow filesystem ``fs`` (none where it does not exist), in one listing:
    ``OSError`` where it cannot be listed, ``UnicodeDecodeError`` for a name that is not UTF-8."""
    pafs = _pafs()
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=recursive, allow_not_found=True))
    return [
        Entry(i.path, i.base_name, i.size, i.mtime_ns, i.type == pafs.FileType.File, i.type == pafs.FileType.Directory)
        for i in infos
    ]


def read_from(fs, path: str) -> bytes:
    """A whole file of the pyarrow filesystem ``fs`` (a path from ``entries``)."""
    with fs.open_input_stream(path) as f:
        return f.read()


def delete_dir(fs, path: str) -> None:
    fs.delete_dir(path)


def local_fs():
    """This machine's filesystem, as pyarrow's (for a path beside those of a URI's filesystem)."""
    pafs = _pafs()
    return pafs.LocalFileSystem()


def has_files(path: str) -> bool:
    """Whether ``path`` is a directory that holds anything (beside a run's lock)."""
    pafs = _pafs()
    fs, p = filesystem(path)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return False
    try:
        return any(
            not i.base_name.startswith(INNER_LOCK) for i in fs.get_file_info(pafs.FileSelector(p, recursive=False))
        )
    except UnicodeDecodeError:  # a name that is not UTF-8: something is there (the records' listing says what)
        return True


def _names(path: str, kind: str) -> list:
    pafs = _pafs()
    fs, p = filesystem(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=False, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []
    return [i.base_name for i in infos if i.type == getattr(pafs.FileType, kind)]


def list_dirs(path: str) -> list:
    """Names of the directories directly inside ``path`` (none if it does not exist)."""
    return _names(path, "Directory")


def list_files(path: str) -> list:
    """Names of the files directly inside ``path`` (none if it does not exist)."""
    return _names(path, "File")


def read_bytes(path: str) -> bytes:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_text(path: str, text: str) -> None:
    fs, p = filesystem(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode("utf-8"))


def delete(path: str) -> None:
    fs, p = filesystem(path)
    try:
        fs.delete_file(p)
    except (FileNotFoundError, OSError):
        pass


def _sibling(exp_dir: str, suffix: str) -> str:
    """``<parent>/.<name><suffix>``: beside the experiment, never inside it."""
    parent, name = exp_dir.rstrip("/").rsplit("/", 1) if is_uri(exp_dir) else os.path.split(exp_dir.rstrip("/"))
    return join(parent, f".{name}{suffix}")


INNER_LOCK = ".ablate.lock"  # the lock inside an experiment whose parent is read-only


def local_path(path: str) -> str:
    """A ``file://`` URI as the local path it names (one experiment, one lock: the path's); else ``path``."""
    if path.startswith("file://"):
        return unquote(urlparse(path).path) or "/"
    return path


def lock_path(exp_dir: str) -> str:
    """Where the run that holds ``exp_dir`` keeps its lock: beside the experiment (``.<name>.lock``, so the
    experiment's own files are only its own), or inside it where its parent is read-only and it is not."""
    exp_dir = local_path(exp_dir).rstrip("/")
    if (
        not is_uri(exp_dir)
        and os.path.isdir(exp_dir)
        and os.access(exp_dir, os.W_OK | os.X_OK)
        and not os.access(os.path.dirname(exp_dir) or ".", os.W_OK | os.X_OK)
    ):
        return os.path.join(exp_dir, INNER_LOCK)
    return _sibling(exp_dir, ".lock")


def check_writable(exp_dir: str) -> None:
    """Raise ``OSError`` unless files can be created where the experiment's lock and files go (probe, removed)."""
    lock = lock_path(exp_dir)
    probe = join(lock.rsplit("/", 1)[0], f".{os.path.basename(exp_dir.rstrip('/'))}.probe-{os.getpid()}")
    write_text(probe, "ablate")
    delete(probe)


def local_mirror(exp_dir: str) -> str:
    """Where the tables and the report of an experiment on URI storage are written on this machine:
    ``results/<name>@<hash of the URI>``, never a local experiment's folder (a name has no '@')."""
    name = exp_dir.rstrip("/").rsplit("/", 1)[-1]
    return os.path.abspath(os.path.join("results", f"{name}@{hashlib.sha1(exp_dir.encode()).hexdigest()[:8]}"))


def upload(local_dir: str, uri: str, names: Iterable[str]) -> None:
    """Copy the named files of ``local_dir`` (those that exist) to the experiment at ``uri``; nothing for a
    local experiment, whose outputs are written where it lives."""
    if not is_uri(uri):
        return
    for name in names:
        src = os.path.join(local_dir, name)
        if os.path.exists(src):
            with open(src, encoding="utf-8") as f:
                write_text(join(uri, name), f.read())


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # another user's process, or no pid said: assume alive
    return True


class ExperimentLock:
    """One writer per experiment, for the whole run: local and URI storage alike.

    Local storage: an OS file lock (``filelock``, flock) on ``<storage>/.<name>.lock``: the kernel
    frees it when the holder dies, however it dies.  URI storage (``s3://``, ``file://``): a lock
    object beside the experiment, naming its holder and refreshed every ``HEARTBEAT_S`` by a
    thread; one older than ``STALE_S``, or one whose holder's pid is gone on this same host, belongs
    to a dead run and is taken over.  Limits: object
    stores have no compare-and-swap through pyarrow, so two runs started within the same second
    on different machines could both pass the check; and a driver cut off from the bucket for
    ``STALE_S`` loses its lock.
    """

    HEARTBEAT_S = 60.0
    STALE_S = 300.0

    def __init__(self, exp_dir: str):
        self.exp_dir = local_path(exp_dir).rstrip("/")  # file:// and its path are one experiment, one lock
        self.path = lock_path(self.exp_dir)
        self._flock = None
        self._stop = None
        self.holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["python -m ablate.grid", *sys.argv[1:]])[:300],
        }

    @classmethod
    def holder(cls, exp_dir: str):
        """Who holds ``exp_dir`` now (their pid, host, since, command), or None if no living run does."""
        lock = cls(exp_dir)
        if is_uri(lock.exp_dir):
            try:
                h = json.loads(read_text(lock.path))
            except (OSError, ValueError):
                return None
            dead = h.get("host") == socket.gethostname() and not _alive(h.get("pid"))
            return None if dead or time.time() - float(h.get("heartbeat", 0)) >= cls.STALE_S else h

        if not os.path.exists(lock.path):
            return None
        import filelock  # ~50 ms: not before the driver's signal handlers (ablate.grid imports this module)

        probe = filelock.FileLock(lock.path, timeout=0)
        try:
            probe.acquire()
        except filelock.Timeout:
            try:
                with open(lock.path + ".holder") as f:
                    return json.load(f)
            except (OSError, ValueError):
                return {}
        except OSError:
            return None
        probe.release()  # nobody held it (the file is left as it was)
        return None

    def _describe(self, h: dict) -> str:
        return f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')} ({h.get('command', '?')})"

    def acquire(self) -> "ExperimentLock":
        if is_uri(self.exp_dir):
            return self._acquire_uri()
        import filelock  # as in ``holder``: after the signal handlers

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._flock = filelock.FileLock(self.path, timeout=0)
        try:
            self._flock.acquire()
        except filelock.Timeout:
            try:
                h = json.loads(open(self.path + ".holder").read())
            except (OSError, ValueError):
                h = {}
            raise LockedError(
                f"{self.exp_dir} is being run by {self._describe(h)}; wait for it to end (or stop it), then run again"
            ) from None
        with open(self.path + ".holder", "w") as f:
            json.dump(self.holder, f)
        return self

    def _acquire_uri(self) -> "ExperimentLock":
        try:
            h = json.loads(read_text(self.path))
        except (FileNotFoundError, ValueError):
            h = None
        if h and h.get("host") == socket.gethostname() and not _alive(h.get("pid")):
            h = None  # its holder died on this very host (SIGKILL, SIGHUP): taken over at once
        if h and time.time() - float(h.get("heartbeat", 0)) < self.STALE_S:
            raise LockedError(
                f"{self.exp_dir} is being run by {self._describe(h)}; wait for it to end "
                f"(a lock object not refreshed for {self.STALE_S:.0f} s is taken over)"
            )
        self._beat()
        self._stop = threading.Event()
        threading.Thread(target=self._heartbeat, daemon=True, name="ablate-lock").start()
        return self

    def _beat(self) -> None:
        write_text(self.path, json.dumps({**self.holder, "heartbeat": time.time()}))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            try:
                self._beat()
            except Exception:  # a missed beat is retried; the run must not die of it
                pass

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            delete(self.path)
        if self._flock is not None:
            for p in (self.path + ".holder", self.path):
                try:
                    os.remove(p)
                except OSError:
                    pass
            self._flock.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def failure(e: Exception, exp_dir: str) -> str:
    """What failed when the storage failed under a running grid (a full disk leaves files cut short), in
    words; ``e`` again if it is not a storage failure."""
    full = not is_uri(exp_dir) and shutil.disk_usage(exp_dir).free < 16 * 2**20
    if not (full or isinstance(e, (OSError, EOFError, pickle.UnpicklingError))):
        raise e
    what = f"no space left on {exp_dir}" if full else f"the storage at {exp_dir} failed"
    return f"{what} ({e.__class__.__name__}: {first_line(e, 160)})"


def remedy(line: str) -> str:
    """What to do before ``--resume``, for the line ``failure`` wrote: free space, or wait for the storage."""
    return "free space, then" if line.startswith("no space left") else "once it answers again,"


def trial_failure(errors, exp_dir: str) -> Optional[str]:
    """Where every error the trials ended on (Tune's, after their retries) is the storage's (an ``OSError``: a bucket
    that did not answer, a disk that failed), that in words (as ``failure`` says it); else None."""
    causes = [getattr(e, "cause", None) or e for e in errors]  # a RayTaskError(OSError) carries its cause
    if not causes or not all(isinstance(c, OSError) for c in causes):
        return None
    return failure(causes[0], exp_dir)


def unusable_location(storage_path: str, e: BaseException) -> UsageError:
    """The one line for a storage path pyarrow cannot use (an unknown scheme, a malformed URI), and what is."""
    return UsageError(
        f"key 'storage_path': {storage_path!r} is not a usable location "
        f"({e.__class__.__name__}: {first_line(e)}); allowed: a local directory, or a URI such as "
        "s3://bucket/path or file:///path"
    )


def preflight(exp_dir: str, output_dir: str, storage_path: str) -> None:
    """Before a run takes an experiment: its place is a directory that can be written (the lock's place too),
    and so is ``output_dir`` where it differs (URI storage: the tables and the report go to a local mirror);
    else ``UsageError`` with one line naming the key and what is wrong."""
    try:
        if not is_uri(exp_dir) and os.path.exists(exp_dir) and not os.path.isdir(exp_dir):
            raise UsageError(
                f"{exp_dir} is a file, not an experiment directory; choose another name= (nothing was changed)"
            )
        check_writable(exp_dir)
        if not is_uri(exp_dir) and os.path.isdir(exp_dir) and not os.access(exp_dir, os.W_OK | os.X_OK):
            raise PermissionError(f"{exp_dir} is read-only")
    except UsageError:
        raise
    except OSError as e:
        raise UsageError(
            f"key 'storage_path': cannot write to {exp_dir} ({e.__class__.__name__}: {first_line(e) or 'no detail'})"
        ) from None
    except Exception as e:  # pyarrow: an unknown scheme, a malformed URI
        raise unusable_location(storage_path, e) from None
    if output_dir != exp_dir:  # URI storage: the tables and the report go to a local mirror
        try:
            os.makedirs(output_dir, exist_ok=True)
            if not os.access(output_dir, os.W_OK | os.X_OK):
                raise PermissionError("read-only")
        except OSError as e:
            raise UsageError(
                f"the tables of {exp_dir} are written to {output_dir} (in the working "
                f"directory), which cannot be written ({e.__class__.__name__}: {first_line(e)}); "
                "run from a writable directory"
            ) from None
