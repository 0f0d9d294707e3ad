"""Seconds per training epoch and parameter count of every cell (recipe, family, z) in params.yaml.

Trains each cell's first seed for `--epochs` epochs on the full training set with the
project's own loop (the seed changes no speed) and prints the mean epoch time
(training plus the per-epoch test evaluation) and an estimate of the study's training
time: every seed of these cells at their recipes' epoch counts. It reads params.yaml
and data/DATASET (`dvc repro download` first).

    python -m benchmarks.epoch_time [--epochs 1] [--cells study-conv-2 tuned-residual-1]
"""

import argparse
import time

import torch

from benchmarks.common import load_images, train_scratch
from stages.common import stage_main
from vae.config import cell_name, load_params, runs, train_config
from vae.models import count_parameters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--cells", nargs="*", help="RECIPE-FAMILY-Z cells (default: all in params.yaml)")
    args = ap.parse_args()
    params = load_params()
    cells = list(dict.fromkeys(run[:3] for run in runs(params)))  # (recipe, family, z), in dvc.yaml's order
    unknown = set(args.cells or []) - {cell_name(*c) for c in cells}
    if unknown:
        ap.error(f"not cells of params.yaml: {', '.join(sorted(unknown))}")
    selected = [c for c in cells if not args.cells or cell_name(*c) in args.cells]
    seed, n_seeds = params["seeds"][0], len(params["seeds"])
    train_x, test_x = load_images(params["data"]["dataset"])
    # One-time costs belong to no cell (the first optimiser alone imports torch._dynamo, ~1.5 s).
    recipe, family, z = selected[0]
    train_scratch(
        "warm-up",
        family,
        z,
        params,
        {**train_config(params, recipe, family, seed), "epochs": 1},
        train_x[:256],
        test_x[:256],
    )
    total = 0.0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(train_x)} training images")
    print(f"{'cell':<20}{'parameters':>12}{'s/epoch':>10}{'img/s':>9}")
    for recipe, family, z in selected:
        cell = cell_name(recipe, family, z)
        settings = train_config(params, recipe, family, seed)
        t0 = time.perf_counter()
        model, _ = train_scratch(cell, family, z, params, {**settings, "epochs": args.epochs}, train_x, test_x)
        per_epoch = (time.perf_counter() - t0) / args.epochs
        total += per_epoch * settings["epochs"] * n_seeds
        print(f"{cell:<20}{count_parameters(model):>12,}{per_epoch:>10.1f}{len(train_x) / per_epoch:>9.0f}")
    print(
        f"estimated training time of these cells, {n_seeds} seeds each at their recipes' epoch counts: "
        f"{total / 60:.1f} min (one stage at a time, from the epoch times above)"
    )


if __name__ == "__main__":
    stage_main("epoch_time", main)
