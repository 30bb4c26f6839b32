"""``cluster-onprem.yaml`` as a file, in-process: what it must say for a lab to fill it in, start this cluster's
Ray and no other's, and stop it (its run on real hosts with ``ray up`` is tests/system/test_onprem.py)."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from helpers.cli import REPO
from helpers.hosts import Hosts

# The system tests: slow, and skipped (one line) where the kernel refuses namespaces or a tool is missing.
SKIP = Hosts.skip_reason()

on_hosts = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))

with_moto = pytest.mark.skipif(
    importlib.util.find_spec("moto") is None, reason="moto's S3 server is missing (pip install -e '.[test]')"
)

PYBIN = Path(sys.executable).parent

BUCKET = "ablate-onprem"

GRID = [
    "blocks=[baseline,skipinit]",
    "depths=[8]",
    "lrs=[0.1]",
    "seeds=[0]",
    "epochs=2",
    "wandb.mode=offline",
    # a whole worker (2 CPUs) per trial: the two trials can only run on two hosts
    "cpus_per_trial=2",
    "name=onprem",
]


def test_onprem_yaml_validates_and_stops_only_its_own_ray():
    """Ray's own schema and local-provider preparation take the file; no command stops another's Ray."""
    import yaml
    from ray.autoscaler._private.local.config import prepare_local
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster-onprem.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)
    assert raw["provider"]["type"] == "local" and "available_node_types" not in raw  # the provider refuses them
    prepared, _ = prepare_local(raw)
    assert prepared["available_node_types"]["local.cluster.node"]["min_workers"] == len(raw["provider"]["worker_ips"])
    commands = [
        c for key in ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands") for c in raw[key]
    ]
    assert not any(re.search(r"\bray stop\b|scripts\.scripts stop", c) for c in commands), commands
    temp = re.search(r"^TEMP=(\S+)", (REPO / "cluster-onprem-stop.sh").read_text(), re.M).group(1)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert raw[key][0] == "sh ~/ablate/cluster-onprem-stop.sh", raw[key]
        assert f"--temp-dir={temp} " in raw[key][1], raw[key]
