"""tools/atomic_dvc.py patches DVC's internals (#42): it refuses a DVC without what it replaces, instead of
patching nothing and leaving dvc.lock written in place again; and the installed DVC is one it was tested with."""

import sys
from importlib.metadata import version

import pytest

from tests.smoke import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import atomic_dvc  # noqa: E402


def test_the_installed_dvc_is_one_the_atomic_lock_patch_was_tested_with():
    assert version("dvc") in atomic_dvc.TESTED_DVC, (
        f"DVC {version('dvc')} is not one tools/atomic_dvc.py was tested with ({', '.join(atomic_dvc.TESTED_DVC)}): "
        "read what patch() replaces in that DVC, run tests/test_study.py, then add it to TESTED_DVC"
    )


def test_the_atomic_patch_refuses_a_dvc_without_what_it_replaces(monkeypatch):
    from dvc import rwlock
    from dvc.utils.serialize import _common

    atomic_dvc.patch()  # this DVC: every target there
    monkeypatch.delattr(rwlock, "_edit_rwlock")
    with pytest.raises(atomic_dvc.PatchError, match=r"dvc\.rwlock\._edit_rwlock\(lock_dir, fs, hardlink\) is not in"):
        atomic_dvc.patch()
    monkeypatch.undo()
    monkeypatch.setattr(_common, "_dump_data", lambda path, data, dumper, fs=None, encoding=None: None)
    with pytest.raises(atomic_dvc.PatchError, match=r"_common\._dump_data"):
        atomic_dvc.patch()
    monkeypatch.undo()
    monkeypatch.delattr(rwlock, "make_lock")
    with pytest.raises(atomic_dvc.PatchError, match="dvc.rwlock has no make_lock"):
        atomic_dvc.patch()
