"""What every stage does first: load params, and for per-run stages parse `RECIPE FAMILY Z`."""
import argparse
import sys
from pathlib import Path

import torch

from vae.config import ParamsError, load_params, run_name, runs


def params_or_exit(stage: str) -> dict:
    """Validated params.yaml; a bad one ends the stage with the message alone, which names the key
    to fix (a traceback would bury it under frames of our code)."""
    try:
        return load_params()
    except ParamsError as e:
        sys.exit(f"{stage}: {e}")


def run_args(description: str) -> tuple[dict, str, str, int, str]:
    """Parse `RECIPE FAMILY Z`, load params, and check the run is one params.yaml defines."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("recipe")
    p.add_argument("family")
    p.add_argument("z", type=int)
    args = p.parse_args()
    run = run_name(args.recipe, args.family, args.z)
    params = params_or_exit(f"{Path(sys.argv[0]).stem} {run}")
    if (args.recipe, args.family, args.z) not in runs(params):
        p.error(f"run {run} is not in params.yaml recipes x families "
                f"x latent_dims ({params['recipes']} x {params['families']} x {params['latent_dims']})")
    # Collapsed or diverged models drift into subnormal floats, which are ~2x
    # slower on CPUs; flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    return params, args.recipe, args.family, args.z, run
