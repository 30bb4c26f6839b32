"""wandb's ``.wandb`` file format, read by ``ablate.run.wandb_log`` (wandb ships no reader): a real offline run
written by the installed wandb is read back step for step, so an upgrade that changes the format fails here."""

import pytest

from ablate import storage
from ablate.run.wandb_log import logged_steps

pytestmark = pytest.mark.slow  # wandb starts its service process


def test_an_offline_run_of_the_installed_wandb_is_read_back_step_for_step(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(
        project="seam",
        id="seam0001",
        mode="offline",
        dir=str(tmp_path),
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    for step in (1, 2, 3, 5):
        run.log({"val_acc": 0.1 * step}, step=step)
    run.finish()
    assert logged_steps("seam0001", [(storage.local_fs(), str(tmp_path))]) == {1, 2, 3, 5}
    assert logged_steps("another1", [(storage.local_fs(), str(tmp_path))]) == set()
