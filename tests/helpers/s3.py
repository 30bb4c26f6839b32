"""An S3-compatible server for the system tests (moto's server mode, real HTTP, real S3 API), run inside a host
of the multi-host harness: its own network namespace, a "storage box", so that its cable can be pulled (``cut``:
its end of the bridge down, packets dropped, moto's objects kept) and plugged back (``mend``) while nothing else
on the machine is touched."""

import os
import signal
import socket
import subprocess
import sys

from helpers.cli import wait_for

BUCKET = "ablate-s3"


def s3_env(url):
    """What a process needs to reach the box: dummy keys and the endpoint (pyarrow takes AWS_ENDPOINT_URL)."""
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


class MotoOnHost:
    """moto's S3 server on ``host`` (a ``helpers.hosts.Host``), with the bucket ``BUCKET``."""

    def __init__(self, host, logfile, port=9000):
        self.host, self.port = host, port
        self.url = f"http://{host.ip}:{port}"
        self.proc = subprocess.Popen(
            host.nsenter(sys.executable, "-m", "moto.server", "-H", host.ip, "-p", str(port)),
            stdout=open(logfile, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            try:
                socket.create_connection((host.ip, port), 1).close()
                return True
            except OSError:
                return False

        wait_for(up, 60, "moto's server")
        self.client().create_bucket(Bucket=BUCKET)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def keys(self, prefix=""):
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def read(self, key):
        return self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()

    def cut(self):
        """The box's cable pulled: its veth (this machine's end, on the bridge) down; new connections fail, open
        ones hang, nothing is lost on the box."""
        subprocess.run(["ip", "link", "set", self.host.veth, "down"], check=True)

    def mend(self):
        subprocess.run(["ip", "link", "set", self.host.veth, "up"], check=True)

    def stop(self):
        for pid in [self.proc.pid, *self.host.processes()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def records_in(box, prefix):
    """Each checkpoint record (``ablate_record.json``) under ``prefix`` as text, by key, as the bucket holds them
    now. A group keeps its newest checkpoints and deletes older ones while it trains, so a key listed a moment ago
    may be gone when read: it is skipped, as any reader of a live bucket must (seen in CI: NoSuchKey)."""
    out = {}
    for key in box.keys(prefix):
        if key.endswith("/ablate_record.json"):
            try:
                out[key] = box.read(key)
            except box.client().exceptions.NoSuchKey:
                continue
    return out
