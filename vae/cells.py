"""The comparison's numbers: every run's metrics in one table, each cell's statistics over its seeds, the
ranking and the verdicts against published figures. Rendering them is vae/report.py (Markdown) and
vae/comparison.py (the files compare writes).

A cell is (recipe, family, z); its runs are its seeds. Its figures are the mean and sample std of the
seeds that trained well: a diverged seed's figures describe a blown-up model, and a collapsed seed's
(a real outcome, but another one) would blend two regimes into a mean that describes neither, so both
are left out and counted beside the mean. A cell with no healthy seed shows the mean of every seed that
did not diverge: collapse is then what the family does there.
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import pandas as pd

from vae import paths
from vae.errors import StageError
from vae.losses import TERMS
from vae.metrics import BINARIZED_METRICS, METRICS, divergence
from vae.params import cell_name, run_name, stage

CELL = ["recipe", "family", "z"]

# Published likelihoods on dynamically binarized MNIST, in nats per image (-log p(x) from importance sampling),
# by latent size. Only a binarized recipe's NLL bound may stand beside them; no published z=1 figure is known.
PUBLISHED_SOURCE = 'Davidson et al. 2018, "Hyperspherical Variational Auto-Encoders" (UAI 2018), Table 1'
PUBLISHED = {
    2: {"Gaussian VAE": 135.73, "hyperspherical S-VAE": 132.50},
}
# Their reported spread of each figure (± in Table 1: the standard deviation over their training runs), which a
# verdict counts beside our own noise.
PUBLISHED_SPREAD = {
    2: {"Gaussian VAE": 0.83, "hyperspherical S-VAE": 0.73},
}
# How their runs differ from ours, as the comparison says it: their MLP as in their released code
# (nicola-decao/s-vae-pytorch, examples/mnist.py: H_DIM = 128, so 784-256-128 and back), K as the paper
# states for its likelihood estimates (the example's own default is 10 samples).
PUBLISHED_SETUP = {
    "network": "one MLP, encoder 784–256–128 and decoder 128–256–784",
    "iw_samples": 500,
}


def load_runs(run_list: list[tuple[str, str, int, int]], params: dict | None = None) -> pd.DataFrame:
    """One row per run, in params order; the run list comes from params, not a glob,
    so files left behind by runs no longer in the matrix are ignored. With params, a missing run's
    error names its evaluate stage as dvc.yaml does (evaluate_subset@ for a subset recipe's)."""
    return mark_in_mean(pd.DataFrame([load_run(*r, params=params) for r in run_list]))


def load_run(recipe: str, family: str, z: int, seed: int, params: dict | None = None) -> dict:
    run = run_name(recipe, family, z, seed)
    if not paths.metrics(run).exists() or not paths.details(run).exists():
        evaluate = stage(params, "evaluate", recipe, run) if params else f"evaluate@{run}"
        raise StageError(f"{paths.metrics(run)} is missing; run `dvc repro {evaluate}`")
    m, d = json.loads(paths.metrics(run).read_text()), json.loads(paths.details(run).read_text())
    last = d.get("study_last_batch") or dict.fromkeys(TERMS, math.nan)  # MNIST's grey-level runs only
    why = divergence(pd.read_csv(paths.history(run)).to_dict("records"))
    return {
        "run": run,
        "cell": cell_name(recipe, family, z),
        "recipe": recipe,
        "family": family,
        "z": z,
        "seed": seed,
        # null: a diverged run's figure that was not finite (JSON has no NaN): NaN, left out of means
        **{c: math.nan if m.get(c) is None else m[c] for c in (*METRICS, *BINARIZED_METRICS)},
        # Scored on the fixed binarization of the test set (train.binarize: dynamic), not on grey levels.
        "binarized": d.get("binarize", "none") != "none",
        "objective": d.get("objective", "elbo"),  # the model files of IWAE runs say so (stages/train.py)
        "collapsed": m["collapsed"],
        "diverged": why is not None,
        "divergence": why or "",
        "collapse_reasons": "; ".join(d["collapse_reasons"]),
        "parameters": d["parameters"],
        **{f"last_{t}": last[t] for t in TERMS},
        "mutual_info_se": d.get("mutual_info_se", math.nan),  # evaluated since #41
        "test_images": d["test_images"],
        "z_samples": d["z_samples"],
        "iw_samples": d["iw_samples"],
        "iw_images": d["iw_images"],
        "iw_samples_lit": d.get("iw_samples_lit", math.nan),  # binarized runs evaluated since #41
    }


def mark_in_mean(runs: pd.DataFrame) -> pd.DataFrame:
    """runs with `in_mean`: whether the seed counts in its cell's figures. The seeds that neither collapsed
    nor diverged; where there are none, every seed that did not diverge (a cell that always collapses)."""
    healthy = ~runs["collapsed"].astype(bool) & ~runs["diverged"].astype(bool)
    finite = ~runs["diverged"].astype(bool)
    any_healthy = healthy.groupby(runs["cell"]).transform("any")
    return runs.assign(in_mean=healthy | (~any_healthy & finite))


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: mean, sample std (NaN for one seed), min and max over the seeds in its mean, the
    number of seeds, of seeds in the mean, and of collapsed and of diverged seeds."""
    grouped = runs.groupby(CELL, sort=False)
    counted = runs[CELL + ["cell"]].join(runs[runs["in_mean"]][[*METRICS, *BINARIZED_METRICS, "mutual_info_se"]])
    stats = counted.groupby(CELL, sort=False)[[*METRICS, "iw_bound_lit"]].agg(["mean", "std", "min", "max"])
    stats.columns = [f"{c}_{s}" if s != "mean" else c for c, s in stats.columns]
    # an SE over images: its mean over the seeds in the mean
    ses = counted.groupby(CELL, sort=False)[[c for c in BINARIZED_METRICS if c.endswith("_se")]].mean()
    extra = grouped.agg(
        cell=("cell", "first"),
        seeds=("seed", "size"),
        in_mean=("in_mean", "sum"),
        collapsed=("collapsed", "sum"),
        diverged=("diverged", "sum"),
        parameters=("parameters", "first"),
        binarized=("binarized", "all"),
        objective=("objective", "first"),
    )
    # MI's standard error of the cell's mean over k seeds: √(Σ SE²) / k; none where no seed recorded one
    mi_se = counted.groupby(CELL, sort=False)["mutual_info_se"].agg(
        lambda se: math.sqrt((se**2).sum()) / se.count() if se.count() else math.nan
    )
    return extra.join(ses).join(mi_se).join(stats).reset_index()


def rank(cells: pd.DataFrame, col: str, how: str) -> list[str]:
    """'best', 'tie' or '' per cell, within each latent size of a recipe.

    Only cells with no collapsed or diverged seed take part, and only where two or more do.
    The best mean is 'best' when its mean ± std interval does not overlap any
    other cell's; otherwise it and every cell overlapping it are 'tie'. One
    seed has no std: its interval is its mean."""
    marks = [""] * len(cells)
    for _, group in cells.groupby(["recipe", "z"], sort=False):
        ok = group[(group["collapsed"] == 0) & (group["diverged"] == 0)]
        if len(ok) < 2:
            continue
        sign = 1 if how == "min" else -1
        best = (sign * ok[col]).idxmin()
        spread = ok[f"{col}_std"].fillna(0.0)
        lo, hi = ok[col] - spread, ok[col] + spread
        overlap = [i for i in ok.index if i != best and lo[i] <= hi[best] and lo[best] <= hi[i]]
        for i in [best, *overlap]:
            marks[cells.index.get_loc(i)] = "tie" if overlap else "best"
    return marks


def verdict(ours: float, noise: float, theirs: float) -> str:
    """Ahead (a lower NLL bound) or behind a published figure by more than the combined noise of both
    sides, or level within it; with the difference and its ± interval either way."""
    d = ours - theirs
    if d < -noise:
        return f"ahead by {-d:.2f} (± {noise:.2f})"
    if d > noise:
        return f"behind by {d:.2f} (± {noise:.2f})"
    return f"level ({d:+.2f} ± {noise:.2f})"


class Judged(NamedTuple):
    """A binarized cell beside the published figures: the bound judged, our noise, and per published model
    its verdict, or why there is none."""

    bound: float
    se: float
    noise: float
    said: dict[str, str]


def judge(c, at_lit: bool) -> Judged:
    """One binarized cell (an aggregate() row) against every published figure of its latent size: at the
    published K where every run reports it, our noise √(std² + SE²), and each verdict against the noise of
    both sides, √(std² + SE² + published spread²)."""
    col = "iw_bound_lit" if at_lit else "iw_bound"
    std, se = getattr(c, f"{col}_std"), getattr(c, f"{col}_se" if at_lit else "iw_bound_se")
    ours = math.hypot(0.0 if math.isnan(std) else std, se)
    said = {}
    for name in dict.fromkeys(n for figures in PUBLISHED.values() for n in figures):
        theirs = PUBLISHED.get(c.z, {}).get(name)
        if theirs is None:
            said[name] = f"no published z={c.z} figure"
        elif c.collapsed or c.diverged:
            said[name] = "not compared: a seed collapsed or diverged"
        else:
            said[name] = verdict(getattr(c, col), math.hypot(ours, PUBLISHED_SPREAD[c.z][name]), theirs)
    return Judged(getattr(c, col), se, ours, said)
