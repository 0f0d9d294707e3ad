"""`dvc`, with its YAML and JSON files (dvc.lock above all) written atomically.

DVC 3.67 writes dvc.lock in place (`open(path, "w+")` in dvc/utils/serialize/_common.py), and
its lock-state file .dvc/tmp/rwlock likewise (dvc/rwlock.py):
a signal that lands during that write leaves it empty or truncated, and every lock
entry not yet committed to git is lost with it. The study command runs every DVC
command through this file, so an interrupted study leaves the previous dvc.lock or
the new one, never half of one:

    python tools/atomic_dvc.py repro ...     # same arguments as `dvc`
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import signal
import sys
import tempfile
from collections import defaultdict
from contextlib import contextmanager


def atomic_dump_data(path, data, dumper, fs=None, **dumper_args):
    """DVC's `_dump_data`, but rendered in memory and renamed into place."""
    buf = io.StringIO()
    dumper(data, buf, **dumper_args)
    if fs is not None and fs.protocol != "local":
        with fs.open(path, "w+", encoding="utf-8") as fd:
            fd.write(buf.getvalue())
        return
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(
        dir=os.path.dirname(os.path.abspath(path)), prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_edit_rwlock(lock_dir, fs, hardlink):
    """DVC 3.67's `dvc.rwlock._edit_rwlock`, with the file renamed into place: a signal during its
    write left .dvc/tmp/rwlock empty, and every later DVC command failed on it ("JSON structure is
    corrupted") until it was deleted by hand."""
    from dvc import rwlock

    path = fs.join(lock_dir, rwlock.RWLOCK_FILE)
    with rwlock.make_lock(fs.join(lock_dir, rwlock.RWLOCK_LOCK), tmp_dir=lock_dir, hardlink_lock=hardlink):
        try:
            with fs.open(path, encoding="utf-8") as fobj:
                lock = rwlock.SCHEMA(json.load(fobj))
        except FileNotFoundError:
            lock = rwlock.SCHEMA({})
        except json.JSONDecodeError as exc:
            raise rwlock.RWLockFileCorruptedError(path) from exc
        except rwlock.Invalid as exc:
            raise rwlock.RWLockFileFormatError(path) from exc
        lock["read"] = defaultdict(list, lock["read"])
        lock["write"] = defaultdict(dict, lock["write"])
        yield lock
        atomic_dump_data(path, lock, json.dump)


# The DVC versions this patch was read against and tested with (tests/test_study.py fails on any other):
# DVC may rename or reshape what patch() replaces, and a patch that replaced nothing would leave dvc.lock
# written in place again, silently.
TESTED_DVC = ("3.67.1",)
# What patch() replaces, and the parameters it was written for.
TARGETS = {
    "dvc.utils.serialize._common._dump_data": ["path", "data", "dumper", "fs", "dumper_args"],
    "dvc.rwlock._edit_rwlock": ["lock_dir", "fs", "hardlink"],
}
# What atomic_edit_rwlock uses of dvc.rwlock.
RWLOCK_NAMES = (
    "make_lock",
    "SCHEMA",
    "RWLOCK_FILE",
    "RWLOCK_LOCK",
    "RWLockFileCorruptedError",
    "RWLockFileFormatError",
    "Invalid",
)


class PatchError(RuntimeError):
    """DVC no longer has what this file replaces: its lock writes would not be atomic."""


def check_targets() -> None:
    import importlib
    import inspect

    for target, params in TARGETS.items():
        module, name = target.rsplit(".", 1)
        fn = getattr(importlib.import_module(module), name, None)
        if fn is None or list(inspect.signature(fn).parameters) != params:
            raise PatchError(
                f"{target}({', '.join(params)}) is not in this DVC, so dvc.lock would not be written atomically"
            )
    from dvc import rwlock

    missing = [name for name in RWLOCK_NAMES if not hasattr(rwlock, name)]
    if missing:
        raise PatchError(f"dvc.rwlock has no {', '.join(missing)}, so .dvc/tmp/rwlock would not be written atomically")


def patch() -> None:
    check_targets()
    # Each serializer module bound `_dump_data` at import: replace every binding.
    from dvc import rwlock
    from dvc.utils.serialize import _common, _json, _py, _toml, _yaml

    for module in (_common, _json, _py, _toml, _yaml):
        if not hasattr(module, "_dump_data"):
            raise PatchError(f"{module.__name__} no longer imports _dump_data; what writes its files now?")
        module._dump_data = atomic_dump_data
    rwlock._edit_rwlock = atomic_edit_rwlock


def die_with_parent(parent: int) -> None:
    """If the process that started this one dies hard (kill -9, out of memory), take DVC and the
    stage it runs (our process group) with it, instead of leaving them computing as orphans."""
    signal.signal(signal.SIGHUP, lambda *_: os.killpg(0, signal.SIGTERM))
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != parent:  # it died before prctl took effect
        os.killpg(0, signal.SIGTERM)


if __name__ == "__main__":
    if os.environ.get("VAE_STUDY_PARENT") and sys.platform == "linux":
        die_with_parent(int(os.environ["VAE_STUDY_PARENT"]))
    try:
        patch()
    except PatchError as e:
        import dvc

        sys.exit(
            f"atomic_dvc: {e}: DVC {dvc.__version__} is not one tools/atomic_dvc.py was tested with "
            f"({', '.join(TESTED_DVC)}); install requirements.lock, or update tools/atomic_dvc.py"
        )
    from dvc.cli import main

    sys.exit(main(sys.argv[1:]))
