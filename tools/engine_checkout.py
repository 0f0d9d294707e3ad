"""The coordinator's checkout: one study at a time, the DVC remote results come home through, the
snapshot of files every worker checks out, and which runs are not yet up to date."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from engine_worker import SNAPSHOT_REF

ROOT = Path(__file__).resolve().parents[1]
# Where a checkout's results go when no DVC remote is configured: outside the checkout,
# shared by every checkout of this user, so a second clone pulls what the first computed.
DEFAULT_REMOTE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vae-study" / "remote"


def say(msg: str) -> None:
    print(f"study: {msg}", flush=True)


def hold_study_lock() -> object:
    """One study per checkout: a second one is told who holds it, instead of failing inside DVC."""
    path = ROOT / ".dvc" / "tmp" / "study.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = path.open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        sys.exit(
            f"study: another study command (pid {holder}) is running in this checkout; wait for it, "
            f"or stop it with `kill -INT {holder}` (it stops cleanly)"
        )
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def dvc_text(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, capture_output=True, text=True).stdout


def remote_url(name: str | None) -> str:
    """The URL of the remote the study shares results through, setting up the local default if none."""
    name = name or dvc_text("config", "core.remote").strip()
    if not name:
        DEFAULT_REMOTE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "-f", "study-local", str(DEFAULT_REMOTE)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        say(
            f"no DVC remote configured: results go to {DEFAULT_REMOTE} (.dvc/config.local, remote "
            "'study-local'); add your own with `dvc remote add -d NAME URL`"
        )
        return str(DEFAULT_REMOTE)
    url = dvc_text("config", f"remote.{name}.url").strip()
    if not url:
        sys.exit(f"study: no DVC remote named {name!r}; `dvc remote list` shows the configured ones")
    # A relative local remote is relative to .dvc/: workers need it absolute.
    if "://" not in url and not os.path.isabs(url):
        url = str((ROOT / ".dvc" / url).resolve())
    return url


def in_checkout(remote: str) -> Path | None:
    """The remote's folder relative to the checkout, where it lies inside it (the project's dvc-remote/)."""
    if "://" in remote or not Path(remote).resolve().is_relative_to(ROOT):
        return None
    return Path(remote).resolve().relative_to(ROOT)


def make_snapshot(remote: str) -> tuple[dict, bytes]:
    """The checkout's files as DVC sees them now (every file git does not ignore, committed or not),
    as one root commit in a git bundle."""
    with tempfile.TemporaryDirectory() as tmp:
        # A scratch index leaves the user's alone; a fixed author works where git has none configured.
        env = {
            **os.environ,
            "GIT_INDEX_FILE": f"{tmp}/index",
            "GIT_AUTHOR_NAME": "vae study",
            "GIT_AUTHOR_EMAIL": "study@localhost",
            "GIT_COMMITTER_NAME": "vae study",
            "GIT_COMMITTER_EMAIL": "study@localhost",
        }

        def git(*args):
            return subprocess.run(
                ["git", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
            ).stdout.strip()

        # A remote kept inside the checkout (the project's own, dvc-remote/) reaches workers by its
        # URL, not in the snapshot.
        inside = in_checkout(remote)
        git("add", "-A", "--", ".", *([f":(exclude){inside}"] if inside else []))
        commit = git("commit-tree", git("write-tree"), "-m", "vae study snapshot")
        git("update-ref", SNAPSHOT_REF, commit)
        git("bundle", "create", "-q", f"{tmp}/s.bundle", SNAPSHOT_REF)
        bundle = Path(tmp, "s.bundle").read_bytes()
    cache = dvc_text("cache", "dir").strip() or str(ROOT / ".dvc" / "cache")
    # `stop`: this study's own stop event (another study on a shared scheduler has its own);
    # `project`: which checkout's runs these are, for the machine's checkpoint folder.
    project = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    stop = f"vae-study-stop-{uuid.uuid4().hex}"
    return {"commit": commit, "remote": remote, "cache": cache, "project": project, "stop": stop}, bundle


def to_compute(todo: list[tuple[str, list[str]]], env: dict) -> list[tuple[str, list[str]]]:
    """The runs whose stages are not up to date here (DVC's own status). Of the whole pipeline: DVC
    resolves it once per target named (144 targets took 128 CPU-s, none 3)."""
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    try:
        changed = json.loads(status.stdout) if status.returncode == 0 else None
    except json.JSONDecodeError:
        changed = None
    if not isinstance(changed, dict):  # no answer: offer every run (a worker's repro skips what is done)
        return todo
    return [(run, st) for run, st in todo if any(s in changed for s in st)]
