"""Argument parsing shared by the per-run stages."""
import argparse

import torch

from vae.config import load_params, run_name, runs


def run_args(description: str) -> tuple[dict, str, str, int, str]:
    """Parse `RECIPE FAMILY Z`, load params, and check the run is one params.yaml defines."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("recipe")
    p.add_argument("family")
    p.add_argument("z", type=int)
    args = p.parse_args()
    params = load_params()
    if (args.recipe, args.family, args.z) not in runs(params):
        p.error(f"run {run_name(args.recipe, args.family, args.z)} is not in params.yaml recipes x families "
                f"x latent_dims ({params['recipes']} x {params['families']} x {params['latent_dims']})")
    # Collapsed or diverged models drift into subnormal floats, which are ~2x
    # slower on CPUs; flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    return params, args.recipe, args.family, args.z, run_name(args.recipe, args.family, args.z)
