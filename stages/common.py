"""What every stage shares: its command line, its params, one-line errors, and the fingerprint of the
code it runs. params.yaml is read, not validated: every stage runs after `check` (it depends on
check's output), which validates it."""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import torch

from vae import paths
from vae.errors import StageError
from vae.params import read_params, run_name, runs

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vae", "stages")  # the project's code; what else is under ROOT (.venv, tests) is not
# The study's assembly step sets it: that machine restores runs from DVC's run-cache and computes none.
RESTORE_ONLY = "VAE_RESTORE_ONLY"
# A write that failed for want of room: what happened, and the fix.
NO_ROOM = {
    errno.ENOSPC: ("no space left", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space (or raise your quota)"),
    errno.EFBIG: ("file too large", "raise the file-size limit (`ulimit -f`) or free some space"),
}


def stage_main(name: str, main) -> None:
    """Run a stage; a failure the user can fix ends it with one line naming the problem and the fix.
    (A traceback would bury that line under frames of our code.)"""
    threading.excepthook = _quiet_log_writer
    try:
        main()
    except StageError as e:
        sys.exit(f"{name}: {e}")
    except PermissionError as e:
        where = Path(e.filename or ".").resolve().parent
        where = where.relative_to(Path.cwd()) if where.is_relative_to(Path.cwd()) else where
        sys.exit(
            f"{name}: cannot write in {where}/: permission denied; make it writable "
            "(or run the pipeline in a checkout you own)"
        )
    except OSError as e:
        if e.errno in NO_ROOM:
            sys.exit(no_room(name, e))
        if e.filename is None:
            raise
        sys.exit(f"{name}: {e.strerror}: {e.filename}")


def no_room(name: str, e: OSError) -> str:
    """One line for a full disk: the file being written (vae.atomic names it) and the room left on its
    file system. The write that failed left the previous file in place; outputs DVC deleted before
    running the stage are in its cache."""
    what, fix = NO_ROOM[e.errno or 0]
    path = Path(e.filename) if e.filename else Path.cwd()
    mount = path.resolve()
    while not mount.exists() or not os.path.ismount(mount):
        mount = mount.parent
    room = shutil.disk_usage(mount).free
    free = f"{room / 1e9:.1f} GB" if room >= 1e9 else f"{room / 1e6:.1f} MB"
    writing = f" writing {_shown(path)}" if e.filename else ""
    return (
        f"{name}: {what}{writing} ({free} free on {mount}); {fix}, then `dvc checkout` restores "
        "this stage's previous outputs"
    )


def _shown(path: Path) -> Path:
    """`path` relative to the working directory (the project root) when it lies inside it."""
    path = path.resolve()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def _quiet_log_writer(args: threading.ExceptHookArgs) -> None:
    """TensorBoard writes its event file from a thread of its own; a failed write is raised again in
    the stage's thread at the next log call, where stage_main makes it one line. The thread's own
    traceback would bury that line."""
    if isinstance(args.exc_value, OSError) and type(args.thread).__module__.startswith("tensorboard."):
        return
    threading.__excepthook__(args)


def refuse_if_restore_only(name: str) -> None:
    """In the study's assembly step DVC restores every run from its run-cache; a run it could not
    restore lands here (`name`: its DVC stage), and must not be computed on the assembling machine
    (hours, by accident)."""
    if os.environ.get(RESTORE_ONLY):
        sys.exit(
            f"{name}: not found in DVC's run-cache, and this step only restores ({RESTORE_ONLY} "
            "is set): the study's workers compute runs; run the study command again"
        )


def parse_args(description: str, per: str | None = None) -> argparse.Namespace:
    """`--help` prints the usage and runs nothing. Per-run stages take RECIPE FAMILY Z SEED;
    per-cell stages (plot) take RECIPE FAMILY Z and use the seed `plot.seed`."""
    p = argparse.ArgumentParser(description=description)
    if per in ("run", "cell"):
        p.add_argument("recipe")
        p.add_argument("family")
        p.add_argument("z", type=int)
    if per == "run":
        p.add_argument("seed", type=int)
    return p.parse_args()


def checked_params() -> dict:
    """params.yaml, once `check` has validated it: DVC runs check first (every stage depends on its output);
    a stage run by hand in a checkout where check never ran is told to run it."""
    if not paths.CHECKED.exists():
        raise StageError(f"{paths.CHECKED} is missing: params.yaml has not been validated; run `dvc repro check`")
    return read_params()


def run_params(args: argparse.Namespace) -> tuple[dict, str]:
    """params.yaml and the run's name, refusing a run that params.yaml does not define."""
    params = checked_params()
    if getattr(args, "seed", None) is None:
        args.seed = params["plot"]["seed"]
    run = run_name(args.recipe, args.family, args.z, args.seed)
    if (args.recipe, args.family, args.z, args.seed) not in runs(params):
        raise StageError(
            f"run {run} is not in params.yaml's matrix: recipes x families "
            f"({params['recipes']} x {params['families']}), subset_recipes x subset_families "
            f"({params['subset_recipes']} x {params['subset_families']}), each x latent_dims x seeds "
            f"({params['latent_dims']} x {params['seeds']})"
        )
    # Collapsed or diverged models drift into subnormal floats, which are ~2x
    # slower on CPUs; flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    return params, run


def read_settings(recipe: str, family: str) -> dict:
    """What `check` resolved for the runs of (recipe, family): see stages/check.py."""
    path = paths.settings(recipe, family)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(
            f"{path}: not found; run `dvc repro check` (the stage that validates params.yaml writes it)"
        ) from None


def code_fingerprint() -> dict[str, str]:
    """sha256 of every project module this process has imported: the code a stage depends on
    (the same files its dvc.yaml deps list; tests/test_dvc_deps.py checks those)."""
    files = {}
    for module in list(sys.modules.values()):
        path = Path(getattr(module, "__file__", None) or "/").resolve()
        if path.is_relative_to(ROOT) and path.relative_to(ROOT).parts[0] in PACKAGES:
            files[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(files.items()))


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
