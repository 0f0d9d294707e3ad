"""Atomic file writes: a crash mid-write leaves the previous file (or directory) intact.

A write that fails (a full disk, a file-size limit) raises an OSError naming the
file being written, never its temp file, so the stage can say which write failed.

Temp files are created mode 0600 by `tempfile`; every write is given the mode
a plain `open()` would have (0666 minus the umask), so a shared workspace can
read what the stages write.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path):
    """Yields a temp path beside `path`; renames it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _naming(e, path) from e
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, path) from e
        raise


@contextmanager
def atomic_dir(path: str | Path):
    """Yields a temp directory beside `path`; it replaces `path` only when the block succeeds,
    so `path` is either complete or as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise _naming(e, path, tmp) from e
        raise


def _naming(e: OSError, path: Path, tmp_dir: Path | None = None) -> OSError:
    """Make `e` name `path` where it names nothing (a failed write() names no file) or a temp
    file or directory beside `path`; a file inside `tmp_dir` is named by its place in `path`."""
    name = Path(e.filename) if isinstance(e.filename, str) else None
    if name is None or name.parent == path.parent:
        e.filename, e.filename2 = str(path), None
    elif tmp_dir is not None and name.is_relative_to(tmp_dir):
        e.filename, e.filename2 = str(path / name.relative_to(tmp_dir)), None
    return e


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj) -> None:
    def check(o, where="$"):
        if isinstance(o, float) and not math.isfinite(o):
            raise ValueError(f"refusing to write {path}: {where} is {o}")
        if isinstance(o, dict):
            for k, v in o.items():
                check(v, f"{where}.{k}")
        elif isinstance(o, list):
            for i, v in enumerate(o):
                check(v, f"{where}[{i}]")

    check(obj)
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_torch(path: str | Path, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def save_figure(fig, path: str | Path, dpi: int = 80) -> None:
    """Write a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
