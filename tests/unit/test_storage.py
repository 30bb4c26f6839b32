"""Where an experiment lives (ablate/storage.py): one lock per experiment however it is named."""

import pytest

from ablate.errors import LockedError
from ablate.storage import ExperimentLock, lock_path


def test_the_same_experiment_as_a_path_and_as_file_uri_takes_one_lock(tmp_path):
    """Two runs of one experiment, one naming it by its path, one by file://, must not both run: the
    second meets the first's lock (before: a local file lock and a lock object that missed each other)."""
    exp = tmp_path / "s" / "twin"
    assert lock_path(f"file://{exp}") == lock_path(str(exp))
    for first, second in ((str(exp), f"file://{exp}"), (f"file://{exp}", str(exp))):
        with ExperimentLock(first):
            assert ExperimentLock.holder(second) is not None
            with pytest.raises(LockedError, match="is being run by"):
                ExperimentLock(second).acquire()
        assert ExperimentLock.holder(second) is None
