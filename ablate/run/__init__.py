"""The commands that do the work (Ray, Tune, W&B, SLURM): the grid's driver and its rounds (``driver``), its
signals, the Ray cluster it joins (``cluster``; Ray's internals behind ``ray_compat``), the Tune trial
(``tune``), checkpoints, W&B runs (``tracking``; wandb's file format behind ``wandb_log``), the progress line,
the plan, SLURM (``slurm``), the report command (``report``) and ``ablate.compare`` (``compare``).

Nothing is imported here: ``python -m ablate.grid`` installs its signal handlers before torch, pandas or Ray.
"""
