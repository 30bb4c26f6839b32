"""Read a .wandb file (wandb 0.31 ships no Python reader): a LevelDB-style log.

A 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of records, each with a 7-byte
header (CRC32 4, length 2 little-endian, type 1) whose payloads (FULL, or FIRST..MIDDLE..LAST)
join into one serialized ``wandb_internal_pb2.Record``.
"""
import json

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32 * 1024, 7


def read_records(path):
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", "not a .wandb file"
    pos, buf, out = 7, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer: padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left
            continue
        buf += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def history(path):
    """[(step, {key: value})] from a .wandb file's history records."""
    rows = []
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            rows.append((rec.history.step.num, items))
    return rows


def config(path):
    cfg = {}
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "config":
            for i in rec.config.update:
                cfg[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return cfg


def run_info(path):
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "run":
            return rec.run
    return None
