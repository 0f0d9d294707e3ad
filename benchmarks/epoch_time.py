"""Seconds per training epoch and parameter count of every run in params.yaml.

Trains each (recipe, family, z) for `--epochs` epochs on the full training set with the
project's own loop and prints the mean epoch time (training plus the per-epoch
test evaluation) and an estimate of the whole study at params' epoch count.

    python -m benchmarks.epoch_time [--epochs 1] [--runs study-conv-2 tuned-residual-1]
"""
import argparse
import time

import torch

from benchmarks.common import load_mnist, train_scratch
from stages.common import params_or_exit
from vae.config import run_name, runs, train_config
from vae.models import count_parameters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--runs", nargs="*", help="run names (default: all in params.yaml)")
    args = ap.parse_args()
    params = params_or_exit("epoch_time")
    train_x, test_x = load_mnist()
    total = 0.0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(train_x)} training images")
    print(f"{'run':<20}{'parameters':>12}{'s/epoch':>10}{'img/s':>9}")
    for recipe, family, z in runs(params):
        run = run_name(recipe, family, z)
        if args.runs and run not in args.runs:
            continue
        tcfg = {**train_config(params, recipe, family), "epochs": args.epochs}
        t0 = time.perf_counter()
        model, _ = train_scratch(run, family, z, params, tcfg, train_x, test_x)
        per_epoch = (time.perf_counter() - t0) / args.epochs
        total += per_epoch * params["train"]["epochs"]
        print(f"{run:<20}{count_parameters(model):>12,}{per_epoch:>10.1f}{len(train_x) / per_epoch:>9.0f}")
    print(f"estimated training time of the study at {params['train']['epochs']} epochs: "
          f"{total / 60:.1f} min (sequential, from the epoch times above)")


if __name__ == "__main__":
    main()
