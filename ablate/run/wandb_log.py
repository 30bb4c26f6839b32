"""What an offline W&B run already holds: a reader of wandb's ``.wandb`` log (a vendor internal, fenced here).

wandb ships no reader for its ``.wandb`` files (``wandb sync`` reads them in its Go core); a restored trial must
not log again the epochs its earlier processes wrote.  The format is wandb's LevelDB-style log, pinned to the
wandb versions ``pyproject.toml`` admits; ``tests/unit/run/test_vendor_seams.py`` writes a real offline run with
the installed wandb and reads it back, so an upgrade that changes the format fails loudly there.
"""

from __future__ import annotations

from ablate import storage

__all__ = ["read_records", "logged_steps"]


# --- what an offline run already holds --------------------------------------------------------
# wandb ships no reader for its .wandb files (`wandb sync` reads them in its Go core); this is
# their documented LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each with a
# 7-byte header (CRC32 4, length 2 little-endian, type 1) whose payloads (FULL, or FIRST..LAST)
# join into one serialized ``wandb_internal_pb2.Record``.
_BLOCK, _HEADER = 32 * 1024, 7


def read_records(data: bytes) -> list:
    """The records of a .wandb file's bytes (a file cut short yields the records before the cut)."""
    from wandb.proto import wandb_internal_pb2 as pb  # wandb's protobufs: only where a restored run is read

    if data[:4] != b":W&B":
        return []
    pos, buf, out = 7, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer: padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left
            continue
        if pos + _HEADER + length > len(data):
            break
        buf += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            try:
                rec.ParseFromString(buf)
            except Exception:
                break
            out.append(rec)
            buf = b""
    return out


def logged_steps(run_id: str, dirs) -> set:
    """Steps that offline runs of ``run_id`` in ``dirs`` (``(pyarrow filesystem, path)`` pairs: the
    trial's working directory and its copy in the experiment's storage) already hold."""
    steps = set()
    for fs, root in dirs:
        try:
            infos = storage.entries(fs, f"{root}/wandb")
        except Exception:
            continue
        for info in infos:
            if (
                info.is_file
                and info.base_name == f"run-{run_id}.wandb"
                and "/offline-run-" in info.path
                and "/latest-run/" not in info.path
            ):
                try:
                    data = storage.read_from(fs, info.path)
                except Exception:
                    continue
                steps |= {r.history.step.num for r in read_records(data) if r.WhichOneof("record_type") == "history"}
    return steps
