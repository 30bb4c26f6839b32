"""An experiment's identity: what makes two runs the same experiment, what a ``--resume`` may grow, and the
identity file as written (no torch, no Ray).

``experiment.yaml`` holds the settings, the experiment's id (every trial record names it), the
provenance, and an ``--until-resolved`` study's own state.  ``--resume`` compares the settings as
they act (``identity``); only an axis may gain values (``growth``).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ablate import storage
from ablate.errors import UsageError, first_line
from ablate.spec.axes import GRID
from ablate.spec.config import ExperimentConfig, to_dict
from ablate.spec.settings import NO_RESULT, as_it_acts, sweep_as_it_acts
from ablate.storage import EXPERIMENT_FILE
from ablate.study.records import experiment_ids

__all__ = [
    "identity",
    "growth",
    "saved_identity",
    "IDENTITY_EXEMPT",
    "GROWABLE",
    "ROUNDS_KEY",
    "META_KEYS",
    "git_commit",
    "provenance",
]

# Settings that may change when an experiment is resumed: they change no result (``settings.NO_RESULT``).
# The name is where the experiment lives: a directory moved or renamed is the same experiment (README).
IDENTITY_EXEMPT = NO_RESULT
# Keys that may gain values on --resume: the experiment grows, its finished trials stay.
GROWABLE = (*(a.key for a in GRID if a.grows), "block_modules")
ROUNDS_KEY = "until_resolved"


def identity(cfg) -> Dict[str, Any]:
    """What makes two experiments the same one (compared on ``--resume``); a config or its dict.

    Each setting as it acts: a default that means a value is that value (``precision: auto`` is fp32,
    ``crop_pad``/``flip``/``channels_last`` unset are the dataset's and the trainer's own), and ASHA's
    keys count only under ASHA, so a resume is never refused for a difference that changes no result.
    """
    d = dict(cfg if isinstance(cfg, dict) else to_dict(cfg))
    for key in ("precision", "crop_pad", "flip", "channels_last"):
        d[key] = as_it_acts(key, d.get(key), d.get("dataset"))
    if "sweep" in d:  # a swept value too (an experiment written before they were read so)
        d["sweep"] = sweep_as_it_acts(d["sweep"], d.get("dataset"))
    if d.get("scheduler", "fifo") != "asha":
        d = {k: v for k, v in d.items() if not k.startswith("asha_")}
    swept = d.get("sweep") or {}  # a swept setting's own value is only its base (see ablate.spec.axes)
    return {k: v for k, v in d.items() if k not in IDENTITY_EXEMPT and k not in swept}


def growth(saved: Dict[str, Any], now: Dict[str, Any]) -> Tuple[List[str], Dict[str, list]]:
    """Compare two identities: (keys that differ in a way no resume allows, {axis: values added}).

    An axis (or ``block_modules``) may gain values, in any order, and a setting that was fixed may become
    an axis whose values include the one it had (``sweep``): its finished points are that value's.  Any
    other difference, or a value removed, is a different experiment.
    """
    refused, added = [], {}
    saved_sweep, now_sweep = saved.get("sweep") or {}, now.get("sweep") or {}
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if k == "sweep" or a == b:
            continue
        if k in now_sweep and k not in saved_sweep:
            continue  # fixed, now swept: judged with the sweep below
        if k in GROWABLE and isinstance(a, list) and isinstance(b, list) and all(v in b for v in a):
            new = [v for v in b if v not in a]
            if new:
                added[next((g.name for g in GRID if g.key == k), k)] = new
        else:
            refused.append(k)
    for k in sorted(set(saved_sweep) | set(now_sweep)):
        a = saved_sweep.get(k, [saved[k]] if k in saved else None)
        b = now_sweep.get(k)
        if b is None or a is None or not all(v in b for v in a):
            refused.append(f"sweep.{k}")
        elif [v for v in b if v not in a]:
            added[k] = [v for v in b if v not in a]
    return refused, added


# What the identity file holds beside the settings: the id, the provenance, and an --until-resolved
# study's own state (its rounds, the points it added beyond the product of the axes, how far it is).
META_KEYS = ("experiment_id", "provenance", ROUNDS_KEY)


def saved_identity(exp_dir: str, command: str = "--resume: ", outcome: str = "nothing was trained") -> Dict[str, Any]:
    """The identity ``exp_dir`` was started (or last grown) with, every key this ablate knows filled in.

    ``UsageError`` with one line for a file that is missing, unreadable, cut short, of another shape,
    without its ``experiment_id`` (the trials' records would then belong to no one: everything
    would train again) or written by a newer ablate.  The line starts with ``command`` (what read it) and
    says ``outcome`` (what did not happen).
    """
    path = storage.join(exp_dir, EXPERIMENT_FILE)
    try:
        saved = yaml.safe_load(storage.read_text(path))
    except FileNotFoundError:
        raise UsageError(f"{command}{exp_dir} holds no {EXPERIMENT_FILE}: it is not an ablate experiment") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(
            f"{command}{path} cannot be read ({e.__class__.__name__}: {first_line(e)}); {outcome}"
        ) from None
    except yaml.YAMLError as e:
        raise UsageError(
            f"{command}{path} is not valid YAML ({first_line(e)}): cut short or edited; {outcome}"
        ) from None
    if not isinstance(saved, dict):
        raise UsageError(f"{command}{path} is not a mapping of settings (cut short or edited); {outcome}")
    if not isinstance(saved.get("experiment_id"), str) or not saved["experiment_id"]:
        ids = experiment_ids(exp_dir)
        fix = (
            f"its trials' records name experiment_id {ids[0]}: add the line  experiment_id: {ids[0]}  to it"
            if len(ids) == 1
            else "restore it from a copy"
        )
        raise UsageError(
            f"{command}{path} names no experiment_id (cut short or edited), so no trial could be "
            f"known as done; {outcome}; {fix}"
        )
    unknown = sorted(k for k in saved if k not in ExperimentConfig.model_fields and k not in META_KEYS)
    if unknown:
        raise UsageError(
            f"{command}{path} has settings this ablate does not know ({', '.join(map(str, unknown[:5]))}): "
            "it was written by a newer ablate (upgrade: pip install -U ablate) or edited by hand"
        )
    # A key added to ablate after the experiment was started had its default then.
    defaults = {
        k: f.get_default(call_default_factory=True) for k, f in ExperimentConfig.model_fields.items() if k not in saved
    }  # only those: a default factory may import torch (the block registry)
    # As the file would hold them: a nested settings model (compare, wandb) as its mapping.
    defaults = {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in defaults.items()}
    return {**defaults, **saved}


def git_commit() -> Optional[str]:
    try:
        here = os.path.dirname(os.path.abspath(__file__))  # the code that runs, wherever the cwd is
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    """What produced the results: the code's commit, the libraries' versions, when."""
    versions = {"python": platform.python_version()}
    for pkg in ("ablate", "torch", "ray", "wandb", "scipy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {"git_commit": git_commit(), "versions": versions, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
