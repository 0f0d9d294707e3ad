"""Atomic file writes: a crash mid-write leaves the previous file intact."""
from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yields a temp path beside `path`; renames it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
