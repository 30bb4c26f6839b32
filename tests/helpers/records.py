"""Records written by hand (what a group's checkpoints leave behind, for the unit tests), and what a real run
left: Tune's reports (``trial_results``) and ablate's own records (``trial_records``)."""

import json
import os

from ablate.run.checkpoints import write_checkpoint
from ablate.spec.axes import trial_id
from ablate.spec.experiment_file import load_experiment
from ablate.study.records import make_record


def trial_results(exp):
    """{Tune trial directory: its reports} from Tune's result.json files (what Tune got: epoch, node,
    time, the process's pid), in every Tune run of the experiment."""
    return {
        f"{f.parent.parent.name}/{f.parent.name}": [json.loads(line) for line in f.read_text().splitlines()]
        for f in exp.glob("run-*/*/result.json")
    }


def trial_records(exp):
    """{Tune trial directory: the newest record of its trials' checkpoints} (``ablate.study.records``: written by
    the trial itself, so a test sees an epoch as soon as it is on record, whatever Tune's driver syncs)."""
    out = {}
    for f in sorted(exp.glob("run-*/*/checkpoint_*/ablate_record.json")):
        try:
            out[f"{f.parent.parent.parent.name}/{f.parent.parent.name}"] = json.loads(f.read_text())
        except ValueError:  # being written
            continue
    return out


EXP_ID = "0123456789ab"


def epoch_row(e, acc=0.5, loss=1.0, diverged=False):
    """A history row as the trainer and the trial write it."""
    return {
        "epoch": e,
        "train_loss": loss,
        "train_acc": acc,
        "val_loss": loss,
        "val_acc": acc,
        "lr": 0.1,
        "epoch_seconds": 0.1,
        "images_per_second": 100.0,
        "diverged": diverged,
        "node": "n1",
        "time": 1.0 * e,
    }


def small_config(tmp_path, *overrides):
    """A small experiment's config (2 blocks x depth 8 x lr 0.1 x 2 seeds, 3 epochs) in ``tmp_path``."""
    return load_experiment(
        None,
        [
            "blocks=[baseline,skipinit]",
            "depths=[8]",
            "lrs=[0.1]",
            "seeds=[0,1]",
            "epochs=3",
            f"storage_path={tmp_path}",
            "name=e",
            *overrides,
        ],
    )


def write_record(exp_dir, part, trial_dir, ckpt, points, epochs, done, experiment_id=EXP_ID, state=None):
    """A checkpoint as a trial writes it: the trainer's state and the record beside it."""
    import torch

    d = exp_dir / part / trial_dir / ckpt
    d.mkdir(parents=True)
    members = [{"id": trial_id(experiment_id, p), "point": p} for p in points]
    histories = [[epoch_row(e) for e in range(1, n + 1)] for n in epochs]
    write_checkpoint(
        str(d), state or {"w": torch.zeros(3)}, make_record(experiment_id, trial_dir, members, histories, done)
    )
    return d


def grid_point(block="baseline", seed=0):
    """A grid point of ``small_config``'s grid."""
    return {"block": block, "depth": 8, "lr": 0.1, "seed": seed}


def finished_by_hand(tmp_path):
    """A finished experiment of ``small_config`` (its identity and every trial's record, as ablate writes
    them, no Ray): its directory, the CLI arguments that continue it, and its records."""
    from ablate.storage import RECORD_FILE
    from ablate.study.study import Study

    cfg = small_config(tmp_path / "s", "wandb.mode=disabled")
    study = Study(cfg, resume=False)
    study.experiment_id = EXP_ID
    os.makedirs(study.dir)
    study.write_identity()
    exp = tmp_path / "s" / "e"
    records = [
        write_record(exp, "run-1", f"t{k}", "checkpoint_000000", [grid_point(b, s)], [3], [True]) / RECORD_FILE
        for k, (b, s) in enumerate((b, s) for b in ("baseline", "skipinit") for s in (0, 1))
    ]
    args = [
        "blocks=[baseline,skipinit]",
        "depths=[8]",
        "lrs=[0.1]",
        "seeds=[0,1]",
        "epochs=3",
        f"storage_path={tmp_path / 's'}",
        "name=e",
        "wandb.mode=disabled",
        "--resume",
    ]
    return exp, args, records
