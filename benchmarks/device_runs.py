"""Train runs of params.yaml on another device (a GPU), several at once, and set each beside
the committed run: the study's wall time there, and how far its numbers land from ours.

Each run is the train stage's own loop with its params (recipe, family, seed) and
`train.device` replaced by `--device`, so no DVC is needed and nothing in the project
is written: checkpoints and TensorBoard logs go to a temp dir, and the per-epoch lines
to `--log-dir/RUN.log` if given. Runs start longest first (residual, conv, deep MLP,
simple MLP), `--lanes` at a time, each with `--threads` CPU threads. For every run it
prints the wall time, seconds per epoch and the last epoch's test -ELBO beside the same
epoch of the committed history (metrics/history/RUN.csv; only where `--epochs` leaves the
lr schedule as it was), then the total wall time.
It reads data/DATASET (`dvc repro download` first).

    python -m benchmarks.device_runs --device cuda --lanes 8 [--runs tuned-conv-2-0 ...] [--epochs 5]
"""

import argparse
import contextlib
import csv
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from benchmarks.common import load_images, train_scratch
from stages.common import stage_main
from vae import paths
from vae.config import load_params, run_name, runs, train_config
from vae.data import scored_test_images

LONGEST_FIRST = ("residual", "conv", "deep_mlp", "simple_mlp", "davidson_mlp")


def one_run(run: tuple, device: str, threads: int, epochs: int | None, log_dir: str | None) -> dict:
    recipe, family, z, seed = run
    name = run_name(*run)
    torch.set_num_threads(threads)
    params = load_params()
    settings = {**train_config(params, recipe, family, seed), "device": device}
    # A cosine schedule spans the run's epochs: a shorter run is another run, not the committed one's start.
    comparable = not epochs or epochs == settings["epochs"] or settings["lr_schedule"] == "constant"
    if epochs:
        settings["epochs"] = epochs
    log = open(Path(log_dir) / f"{name}.log" if log_dir else os.devnull, "w")
    with log, contextlib.redirect_stdout(log):
        train_x, test_x = load_images(params["data"]["dataset"])
        test_x = scored_test_images(test_x, settings["binarize"])  # as the train stage scores the run
        t0 = time.perf_counter()
        _, history = train_scratch(name, family, z, params, settings, train_x, test_x)
        seconds = time.perf_counter() - t0
    return {
        "run": name,
        "seconds": seconds,
        "epochs": len(history),
        "test_total": history[-1]["test_total"],
        "comparable": comparable,
    }


def committed(name: str, epoch: int) -> float | None:
    path = paths.history(name)
    if not path.exists():
        return None
    rows = [r for r in csv.DictReader(path.open()) if int(r["epoch"]) == epoch]
    return float(rows[0]["test_total"]) if rows else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--lanes", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    ap.add_argument("--runs", nargs="*", help="RECIPE-FAMILY-Z-SEED runs (default: all in params.yaml)")
    ap.add_argument("--epochs", type=int, help="train this many epochs instead of the recipe's")
    ap.add_argument("--log-dir", help="write each run's per-epoch lines to DIR/RUN.log")
    args = ap.parse_args()
    all_runs = runs(load_params())
    unknown = set(args.runs or []) - {run_name(*r) for r in all_runs}
    if unknown:
        ap.error(f"not runs of params.yaml: {', '.join(sorted(unknown))}")
    selected = sorted(
        (r for r in all_runs if not args.runs or run_name(*r) in args.runs), key=lambda r: LONGEST_FIRST.index(r[1])
    )
    if args.log_dir:
        Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if args.device == "cuda" and torch.cuda.is_available() else args.device
    print(
        f"torch {torch.__version__} on {name}: {len(selected)} runs, {args.lanes} lanes x {args.threads} threads",
        flush=True,
    )
    print(f"{'run':<24}{'min':>7}{'s/epoch':>9}{'epoch':>7}{'-ELBO here':>12}{'committed':>11}{'diff':>8}", flush=True)
    t0 = time.perf_counter()
    # spawn: a CUDA context does not survive fork.
    with ProcessPoolExecutor(args.lanes, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(one_run, r, args.device, args.threads, args.epochs, args.log_dir) for r in selected]
        for job in as_completed(jobs):
            r = job.result()
            ours = committed(r["run"], r["epochs"]) if r["comparable"] else None
            theirs = f"{ours:>11.2f}{r['test_total'] - ours:>8.2f}" if ours is not None else f"{'-':>11}{'-':>8}"
            print(
                f"{r['run']:<24}{r['seconds'] / 60:>7.1f}{r['seconds'] / r['epochs']:>9.2f}{r['epochs']:>7}"
                f"{r['test_total']:>12.2f}{theirs}",
                flush=True,
            )
    print(f"all {len(selected)} runs: {(time.perf_counter() - t0) / 60:.1f} min wall time", flush=True)


if __name__ == "__main__":
    stage_main("device_runs", main)
