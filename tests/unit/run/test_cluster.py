"""cluster.yaml passes Ray's own validation and fits its instances; the multi-node path runs on
real Ray clusters on this machine: two static `ray start` nodes with fake GPUs, and Ray's fake
*autoscaling* provider, whose head has no GPU and whose GPU workers start from zero when trials
ask for them (as `ray up cluster.yaml` does). Only the Ray processes these tests start are stopped."""

import json
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest
import yaml

from ablate.errors import ClusterError
from ablate.run.cluster import Capacity, trial_resources

from helpers.cli import (
    REPO,
)
from helpers.records import small_config

RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def test_cluster_yaml_validates_and_holds_no_secrets():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(raw))  # raises on unknown keys or a bad schema
    bad = dict(raw, bogus_key=1)
    with pytest.raises(Exception, match="bogus_key"):
        validate_config(prepare_config(bad))
    assert raw["available_node_types"][raw["head_node_type"]]["resources"] == {"CPU": 0}  # no trials on the head
    text = (REPO / "cluster.yaml").read_text()
    assert not re.search(r"(api[_-]?key|secret|password|token)\s*[:=]\s*\S", text, re.I)
    assert not re.search(r"\b[0-9a-f]{40}\b", text)  # a W&B key is 40 hex characters
    assert "AKIA" not in text  # an AWS access key id
    assert "netrc" not in json.dumps(raw["file_mounts"])  # no credentials file copied to the nodes
    assert "--dashboard-host=127.0.0.1" in " ".join(raw["head_start_ray_commands"])
    assert all(
        "--disable-usage-stats" in " ".join(raw[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands")
    )


def test_cluster_yaml_gpu_workers_can_write_s3_run_current_cuda_and_fit_the_packing():
    import ray

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    gpu = raw["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0  # autoscaled from zero: the case the grid must handle
    assert gpu["node_config"]["IamInstanceProfile"] == {"Name": "ablate-worker"}  # S3 writes from workers
    assert gpu["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/")  # current driver
    # The image is built from docker/Dockerfile on the driver's Ray; nodes only link the code.
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert f"rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile
    assert all("--no-deps" in c for c in raw["setup_commands"] if "pip install" in c)
    # CPUs per trial x trials per GPU fit the GPU instance (a g5.xlarge has 4 vCPUs).
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge" and gpu["resources"] == {"CPU": 4, "GPU": 1}
    from ablate.spec.experiment_file import load_experiment

    for name in ("cifar10.yaml", "cifar10_quick.yaml"):
        cfg = load_experiment(str(REPO / "experiments" / name))
        assert cfg.cpus_per_trial * cfg.trials_per_gpu <= gpu["resources"]["CPU"] / gpu["resources"]["GPU"], name


GPU_WORKER = {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}

CPU_WORKER = {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 1}


def test_trial_resources_follow_what_the_cluster_has_or_can_add(tmp_path):
    cfg = small_config(tmp_path, "trials_per_gpu=4")
    cpu_only = Capacity(gpus_now=0, shapes=[{"CPU": 2}])
    assert trial_resources(cfg, cpu_only) == {"cpu": 1.0, "gpu": 0.0}
    scalable = Capacity(gpus_now=0, shapes=[{"CPU": 2}, {"CPU": 8, "GPU": 1}], autoscaler="the GCS cluster config")
    assert trial_resources(cfg, scalable) == {"cpu": 1.0, "gpu": 0.25}
    with pytest.raises(ClusterError, match="'gpus_per_trial' is 0.5 but the Ray cluster has no GPU"):
        trial_resources(small_config(tmp_path, "gpus_per_trial=0.5"), cpu_only)
    with pytest.raises(ClusterError, match="'cpus_per_trial' is 16.*up to 8"):
        trial_resources(small_config(tmp_path, "cpus_per_trial=16"), scalable)


class _WebServer:
    """A plain HTTP server on loopback (as the dashboard, or any web service, on a port given as --address)."""

    def __enter__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Quiet(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_an_address_that_answers_but_is_not_ray_is_refused_at_once():
    from ablate.run.cluster import check_address

    with _WebServer() as address, pytest.raises(ClusterError, match="answers there, but not a Ray cluster's GCS"):
        check_address(address)  # Ray would wait ~90 s for a GCS there
    with socket.socket() as silent:  # accepts, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(ClusterError, match="did not answer HTTP/2 within 0.5 s"):
            check_address(f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
