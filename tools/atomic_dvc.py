"""`dvc`, with its YAML and JSON files (dvc.lock above all) written atomically.

DVC 3.67 writes dvc.lock in place (`open(path, "w+")` in dvc/utils/serialize/_common.py):
a signal that lands during that write leaves it empty or truncated, and every lock
entry not yet committed to git is lost with it. The study command runs every DVC
command through this file, so an interrupted study leaves the previous dvc.lock or
the new one, never half of one:

    python tools/atomic_dvc.py repro ...     # same arguments as `dvc`
"""

from __future__ import annotations

import ctypes
import io
import os
import signal
import sys
import tempfile


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


def patch() -> None:
    # Each serializer module bound `_dump_data` at import: replace every binding.
    from dvc.utils.serialize import _common, _json, _py, _toml, _yaml

    for module in (_common, _json, _py, _toml, _yaml):
        if hasattr(module, "_dump_data"):
            module._dump_data = atomic_dump_data


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
    patch()
    from dvc.cli import main

    sys.exit(main(sys.argv[1:]))
