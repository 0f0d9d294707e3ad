"""Argument parsing shared by the per-run stages."""
import argparse

import torch

from vae.config import load_params, run_name


def run_args(description: str) -> tuple[dict, str, int, str]:
    """Parse `FAMILY Z`, load params, and check the run is one params.yaml defines."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("family")
    p.add_argument("z", type=int)
    args = p.parse_args()
    params = load_params()
    if args.family not in params["families"] or args.z not in params["latent_dims"]:
        p.error(f"run {args.family}-{args.z} is not in params.yaml families x latent_dims "
                f"({params['families']} x {params['latent_dims']})")
    # Collapsed or diverged models drift into subnormal floats, which are ~2x
    # slower on CPUs; flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    return params, args.family, args.z, run_name(args.family, args.z)
