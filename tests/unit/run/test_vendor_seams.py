"""The vendor internals ablate relies on, checked against the installed Ray and wandb (``ablate.run.ray_compat``,
``ablate.run.wandb_log``): an upgrade that moves one fails here, by name, before a grid runs on it.  Nothing is
started: the classes and sources are read."""

import inspect
import re
from importlib.metadata import version

import pytest

from helpers.cli import REPO


def _bounds(package):
    """The version range pyproject.toml admits for ``package``."""
    text = (REPO / "pyproject.toml").read_text()
    spec = re.search(rf'"{re.escape(package)}(\[[^\]]*\])?(?P<spec>[^"]*)"', text).group("spec")
    return dict(re.findall(r"(>=|<)([\d.]+)", spec))


def _tuple(v):
    return tuple(int(x) for x in v.split(".")[:3])


@pytest.mark.parametrize("package, dist", [("ray", "ray"), ("wandb", "wandb")])
def test_the_installed_version_is_within_the_pinned_range(package, dist):
    bounds = _bounds(package)
    assert "<" in bounds, f"{package} has no upper bound in pyproject.toml: its internals are pinned (ablate.run)"
    assert _tuple(bounds[">="]) <= _tuple(version(dist)) < _tuple(bounds["<"])


def test_tunes_trial_storage_is_where_ray_compat_reads_it():
    from ray.train._internal.storage import StorageContext
    from ray.tune import TuneContext

    from ablate.run import ray_compat

    assert callable(getattr(TuneContext, "get_storage", None)), "tune.get_context().get_storage() is gone"
    for attr in ("trial_working_directory", "trial_fs_path"):
        assert isinstance(getattr(StorageContext, attr, None), property), f"StorageContext.{attr} is gone"
    # An attribute its constructor sets (the storage's pyarrow filesystem).
    assert "self.storage_filesystem" in inspect.getsource(StorageContext.__init__), "StorageContext.storage_filesystem"
    assert StorageContext.__module__ == ray_compat.STORAGE_LOGGER, "Tune's checkpoint log line moved"


def test_the_autoscaler_record_and_tunes_stop_request_are_where_ray_compat_expects_them():
    from ray._private.state import state
    from ray.tune import tune as tune_module

    assert callable(getattr(state, "get_cluster_config", None)), "ray._private.state.state.get_cluster_config is gone"
    source = inspect.getsource(tune_module)
    assert "SIGUSR1" in source, "Tune no longer stops on SIGUSR1 (ray_compat.tune_stop_handoff)"
    assert "TUNE_DISABLE_SIGINT_HANDLER" in source, "Tune's SIGINT handler can no longer be turned off"


def test_the_local_rays_system_config_names_settings_the_installed_ray_knows():
    """Ray's GCS exits on a ``_system_config`` key it does not know (every local grid would fail to start): each
    key of ``LOCAL_SYSTEM_CONFIG`` is a setting compiled into the installed GCS (Ray's ``ray_config_def.h``)."""
    from pathlib import Path

    import ray

    from ablate.run.ray_compat import LOCAL_SYSTEM_CONFIG

    gcs = (Path(ray.__file__).parent / "core" / "src" / "ray" / "gcs" / "gcs_server").read_bytes()
    for key in LOCAL_SYSTEM_CONFIG:
        assert key.encode() in gcs, f"Ray's config {key} is gone (ablate.run.ray_compat.LOCAL_SYSTEM_CONFIG)"


def test_rays_stop_of_a_worker_inside_a_finalizer_is_not_printed_and_other_errors_are(capsys):
    """``quiet_worker``'s premise (Ray's SIGTERM handler raises SystemExit) read in Ray's source, and its hook:
    a SystemExit raised in a weakref callback prints nothing, a ValueError still prints its traceback."""
    import sys
    import weakref

    from ray._private import worker as ray_worker

    from ablate.run.ray_compat import quiet_worker

    source = inspect.getsource(ray_worker)
    assert "def sigterm_handler" in source and "raise_sys_exit_with_custom_error_message" in source

    class Obj:
        pass

    def finalize_with(exc):
        def callback(_):
            raise exc

        obj = Obj()
        ref = weakref.ref(obj, callback)
        del obj  # CPython runs the callback now; what it raises goes to sys.unraisablehook
        return ref

    saved = sys.unraisablehook
    try:
        quiet_worker()
        finalize_with(SystemExit(1))
        assert capsys.readouterr().err == ""
        finalize_with(ValueError("a real error"))
        assert "ValueError: a real error" in capsys.readouterr().err
    finally:
        sys.unraisablehook = saved
