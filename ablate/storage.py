"""Where an experiment lives: a local directory or a URI (``s3://``, ``gs://``, ``file://``).

One code path for both, through pyarrow's filesystems (the ones Ray Tune itself syncs with), so
the checks that keep experiments apart (identity, "never mixed") hold on shared storage too.
"""
from __future__ import annotations

import os
from typing import Iterable, Tuple

__all__ = ["is_uri", "join", "has_files", "read_text", "write_text", "upload", "EXPERIMENT_FILE"]

# The experiment's identity (its settings), stored with the experiment; read by --resume and the report.
EXPERIMENT_FILE = "ablate_experiment.yaml"


def is_uri(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def _fs(path: str) -> Tuple[object, str]:
    import pyarrow.fs as pafs

    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def has_files(path: str) -> bool:
    """Whether ``path`` is a directory that holds anything."""
    import pyarrow.fs as pafs

    fs, p = _fs(path)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return False
    return bool(fs.get_file_info(pafs.FileSelector(p, recursive=False)))


def read_text(path: str) -> str:
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode("utf-8"))


def upload(local_dir: str, uri: str, names: Iterable[str]) -> None:
    """Copy the named files of ``local_dir`` (those that exist) to the experiment at ``uri``."""
    for name in names:
        src = os.path.join(local_dir, name)
        if os.path.exists(src):
            with open(src, encoding="utf-8") as f:
                write_text(join(uri, name), f.read())
