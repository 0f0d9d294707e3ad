"""What every stage shares: its command line, validated params, one-line errors, and the
fingerprint of the code it runs."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

from vae.config import load_params, run_name, runs
from vae.errors import StageError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vae", "stages")  # the project's code; what else is under ROOT (.venv, tests) is not


def stage_main(name: str, main) -> None:
    """Run a stage; a failure the user can fix ends it with one line naming the problem and the fix.
    (A traceback would bury that line under frames of our code.)"""
    try:
        main()
    except StageError as e:
        sys.exit(f"{name}: {e}")
    except PermissionError as e:
        where = Path(e.filename or ".").resolve().parent
        where = where.relative_to(Path.cwd()) if where.is_relative_to(Path.cwd()) else where
        sys.exit(f"{name}: cannot write in {where}/: permission denied; make it writable "
                 "(or run the pipeline in a checkout you own)")
    except OSError as e:
        if e.filename is None:
            raise
        sys.exit(f"{name}: {e.strerror}: {e.filename}")


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


def run_params(args: argparse.Namespace) -> tuple[dict, str]:
    """Validated params and the run's name, refusing a run that params.yaml does not define."""
    params = load_params()
    if getattr(args, "seed", None) is None:
        args.seed = params["plot"]["seed"]
    run = run_name(args.recipe, args.family, args.z, args.seed)
    if (args.recipe, args.family, args.z, args.seed) not in runs(params):
        raise StageError(f"run {run} is not in params.yaml recipes x families x latent_dims x seeds "
                         f"({params['recipes']} x {params['families']} x {params['latent_dims']} x {params['seeds']})")
    # Collapsed or diverged models drift into subnormal floats, which are ~2x
    # slower on CPUs; flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    return params, run


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
