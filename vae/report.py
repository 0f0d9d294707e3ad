"""Aggregate per-run metrics over seeds into the comparison: a cell is (recipe, family, z), its runs
are its seeds; every figure is a mean with its sample std, and bold marks only what the noise allows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from vae import paths
from vae.atomic import save_figure, write_json, write_text
from vae.data import DATASETS
from vae.errors import StageError
from vae.losses import TERMS
from vae.metrics import BINARIZED_METRICS, DIVERGED_NATS, METRICS, divergence
from vae.params import cell_name, run_name

CELL = ["recipe", "family", "z"]
# Why each column without a direction (vae/metrics.py) is never bold, as the comparison's legend says it.
NOT_RANKED = {
    "kl": "a lower KL is not a better model, only another point on the rate–distortion trade-off (less "
    "information carried by z, paid for in reconstruction)",
    "active_units": "every cell that takes part has all z units active (fewer is a collapse, which keeps the cell "
    "out), so there is nothing to rank",
    "elbo_gap": "the ELBO gap is a diagnostic of the encoder, not a quality: a decoder that ignores z has a gap of 0",
    "mutual_info": "MI is a rate, like KL: how much z carries, not how good the model is",
}

# The study's own table, as published. Its units look like a sum over the
# 16 images of the last, partial test batch (10000 = 78 * 128 + 16); our
# details give the same sum in `study_last_batch` for comparison.
STUDY_TABLE = {
    ("simple_mlp", 1): (2552.0, 2453.7, 98.3),
    ("simple_mlp", 2): (2556.5, 2464.7, 91.7),
    ("deep_mlp", 1): (3293.2, 3293.2, 0.0),
    ("deep_mlp", 2): (2933.6, 2773.8, 159.8),
    ("conv", 1): (2544.6, 2476.9, 67.6),
    ("conv", 2): (2252.0, 2136.1, 115.9),
    ("residual", 1): (2710.0, 2645.5, 64.5),
    ("residual", 2): (2431.3, 2332.3, 99.1),
}

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


def diverged(history: pd.DataFrame) -> bool:
    """vae/metrics.py's definition, on a history read with pandas."""
    return divergence(history.to_dict("records")) is not None


def load_runs(run_list: list[tuple[str, str, int, int]]) -> pd.DataFrame:
    """One row per run, in params order; the run list comes from params, not a glob,
    so files left behind by runs no longer in the matrix are ignored."""
    rows = []
    for recipe, family, z, seed in run_list:
        run = run_name(recipe, family, z, seed)
        if not paths.metrics(run).exists() or not paths.details(run).exists():
            raise StageError(f"{paths.metrics(run)} is missing; run `dvc repro evaluate@{run}`")
        m, d = json.loads(paths.metrics(run).read_text()), json.loads(paths.details(run).read_text())
        last = d.get("study_last_batch") or dict.fromkeys(TERMS, math.nan)  # MNIST's grey-level runs only
        extra = {c: math.nan if m.get(c) is None else m[c] for c in BINARIZED_METRICS}  # binarized runs only
        why = divergence(pd.read_csv(paths.history(run)).to_dict("records"))
        rows.append(
            {
                "run": run,
                "cell": cell_name(recipe, family, z),
                "recipe": recipe,
                "family": family,
                "z": z,
                # null: a diverged run's figure that was not finite (JSON has no NaN): NaN, left out of means
                "seed": seed,
                **{c: math.nan if m[c] is None else m[c] for c in METRICS},
                **extra,
                # Scored on the fixed binarization of the test set (train.binarize: dynamic), not on grey levels.
                "binarized": d.get("binarize", "none") != "none",
                "collapsed": m["collapsed"],
                "diverged": why is not None,
                "divergence": why or "",
                "collapse_reasons": "; ".join(d["collapse_reasons"]),
                "parameters": d["parameters"],
                **{f"last_{t}": last[t] for t in TERMS},
                "test_images": d["test_images"],
                "z_samples": d["z_samples"],
                "iw_samples": d["iw_samples"],
                "iw_images": d["iw_images"],
                "iw_samples_lit": d.get("iw_samples_lit", math.nan),  # binarized runs evaluated since #41
            }
        )
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: mean, sample std (NaN for one seed), min and max of every column over seeds,
    the number of seeds and of collapsed and of diverged seeds."""
    grouped = runs.groupby(CELL, sort=False)
    stats = grouped[[*METRICS, "iw_bound_lit"]].agg(["mean", "std", "min", "max"])
    stats.columns = [f"{c}_{s}" if s != "mean" else c for c, s in stats.columns]
    extra = grouped.agg(
        cell=("cell", "first"),
        seeds=("seed", "size"),
        collapsed=("collapsed", "sum"),
        diverged=("diverged", "sum"),
        parameters=("parameters", "first"),
        binarized=("binarized", "all"),
        # an SE over images: its mean over seeds
        **{c: (c, "mean") for c in BINARIZED_METRICS if c.endswith("_se")},
    )
    return extra.join(stats).reset_index()


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


def number(v: float, digits: int = 2, sign: str = "") -> str:
    """Fixed decimals, or 3 significant digits for the 1e20s of a diverged run."""
    return f"{v:{sign}.3g}" if abs(v) >= 1e6 else f"{v:{sign}.{digits}f}"


def mean_std(mean: float, std: float, digits: int = 2) -> str:
    return number(mean, digits) if math.isnan(std) else f"{number(mean, digits)} ± {number(std, digits)}"


def flag_column(cells: pd.DataFrame, runs: pd.DataFrame, flag: str, reason: str) -> list[str]:
    """Per cell "0/n", or "⚠ k/n: seed S, why" for the first of its k flagged seeds."""
    first = runs[runs[flag]].groupby("cell")[["seed", reason]].first()
    return [
        f"⚠ {k}/{n}: seed {first.at[c, 'seed']}, {first.at[c, reason]}" if k else f"0/{n}"
        for k, n, c in zip(cells[flag], cells["seeds"], cells["cell"])
    ]


def recipe_table(cells: pd.DataFrame, runs: pd.DataFrame, binarized: bool = False) -> str:
    """One recipe's cells as a Markdown table: mean ± std over seeds, bold where the noise allows,
    in the columns that have a better direction. A binarized recipe's columns are named for what they are there."""
    table = cells[["family", "z"]].astype(str).copy()
    for col, metric in METRICS.items():
        marks = rank(cells, col, metric.better) if metric.better else [""] * len(cells)
        text = [mean_std(m, s) for m, s in zip(cells[col], cells[f"{col}_std"])]
        table[(binarized and metric.binarized) or metric.header] = [
            f"**{t}**" if k == "best" else f"{t} †" if k == "tie" else t for t, k in zip(text, marks)
        ]
    table["collapsed"] = flag_column(cells, runs, "collapsed", "collapse_reasons")
    table["diverged"] = flag_column(cells, runs, "diverged", "divergence")
    table["parameters"] = cells["parameters"].map("{:,}".format)
    return table.to_markdown(index=False, disable_numparse=True)


def common_value(df: pd.DataFrame, col: str) -> str:
    """The value a column has in every row, or all of them joined by '/'."""
    vals = sorted(set(df[col]))
    return str(vals[0]) if len(vals) == 1 else "/".join(map(str, vals))


def markdown(runs: pd.DataFrame, cells: pd.DataFrame, dataset: str) -> str:
    recipes = list(dict.fromkeys(cells["recipe"]))
    # Recipes on binarized images have another target: the grey-level legend, side-by-side table and the
    # study's table are of the grey-level recipes alone, and the binarized ones get a section of their own.
    binarized = set(cells.loc[cells["binarized"], "recipe"])
    grey_recipes = [r for r in recipes if r not in binarized]
    grey = runs[runs["recipe"].isin(grey_recipes)] if grey_recipes else runs
    title, n_test = DATASETS[dataset].title, common_value(runs, "test_images")
    lower, higher = ([m.header for m in METRICS.values() if m.better == how] for how in ("min", "max"))
    ranked = f"lower is better for {', '.join(lower)}" + (f"; higher for {', '.join(higher)}" if higher else "")
    not_ranked = "; ".join(f"{m.header}, as {NOT_RANKED[c]}" for c, m in METRICS.items() if m.better is None)
    log_n = " / ".join(f"{math.log(n):.2f}" for n in sorted(set(runs["test_images"])))
    lines = [
        f"# VAE comparison on {title}",
        "",
        f"Test set ({n_test} images), **nats per image**, each cell the mean ± sample std over its seeds "
        f"({common_value(cells, 'seeds')} per cell; seeds {common_value(runs, 'seed')}). −ELBO, reconstruction "
        f"and KL: over all {n_test} test images, {common_value(runs, 'z_samples')} z draw(s) per image. −ELBO (IW "
        f"subset), IW bound and ELBO gap: on a fixed random subset of {common_value(grey, 'iw_images')} test "
        f"images, all three from the same K={common_value(grey, 'iw_samples')} importance samples per image: the "
        "subset's −ELBO is minus the mean of their log-weights, the IW bound (importance-weighted bound) minus "
        "their log-mean-exp, and the ELBO gap the difference of the two, image by image (≥ 0 by Jensen's "
        "inequality), averaged over the subset; so the gap is of the IW subset, not of the −ELBO column. The "
        f"targets are grey levels, so the IW bound bounds a cross-entropy, not a likelihood of {title}, and is "
        "not comparable to published NLLs of binarized images. Active units: latent dimensions with "
        "Var_x(E[z_d|x]) > threshold. MI: I_q(x; z), what z carries about x, with the aggregate posterior q(z) "
        f"the mixture of the posteriors of all {n_test} test images; x is one of those images, so the estimate "
        f"is still limited by the test-set size: at most log N = {log_n} nats.",
        "",
        "**Bold**: best within a recipe and latent size among the cells with no collapsed or diverged seed, only "
        "where its mean ± std does not overlap any other such cell's; † : tied for best (the intervals overlap). "
        f"Ranked: {ranked}. "
        f"Never bold: {not_ranked}. Cells with a collapsed or diverged seed are never marked "
        "and are not compared. Recipes are defined in params.yaml (`train`, overridden by `recipe.NAME`, then by "
        "`recipe.NAME.families.FAMILY`).",
        "",
    ]
    if binarized:
        lines += [binarized_legend(runs[runs["binarized"]], title), ""]
    for recipe in recipes:
        pick = cells["recipe"] == recipe
        lines += [f"## Recipe `{recipe}`", ""]
        on_bits = cells.loc[pick & cells["binarized"], "cell"]
        if len(on_bits):  # a recipe may binarize some families only (recipe.NAME.families.FAMILY)
            which = "All cells are" if len(on_bits) == pick.sum() else f"Cells {', '.join(on_bits)} are"
            lines += [f"{which} on binarized {title}: their IW bound is an upper bound on the NLL.", ""]
        lines += [recipe_table(cells[pick], runs, binarized=len(on_bits) == pick.sum()), ""]
    if cells["collapsed"].any():
        lines += [
            "⚠ k/n: k of the cell's n seeds collapsed (fewer active units than z, or a latent dimension "
            "whose KL is below `eval.collapse_kl`), with the first one's reasons.",
            "",
        ]
    if cells["diverged"].any():
        lines += [
            f"⚠ diverged k/n: in k of the n seeds the optimisation blew up: the loss became NaN or "
            "infinite (training stopped there, and the seed's figures are of its model before that epoch), "
            f"or the last epoch's mean training −ELBO is over {DIVERGED_NATS:.0f} nats, ten times that of a "
            "decoder predicting 0.5 for every pixel (the seed's figures are of a broken model).",
            "",
        ]
    if len(grey_recipes) > 1:
        lines += recipe_deltas(cells[cells["recipe"].isin(grey_recipes)], grey_recipes)
    if dataset == "mnist":  # the study's table and the published figures are of MNIST: set nothing else beside them
        if grey_recipes:
            lines += study_comparison(runs[runs["recipe"] == grey_recipes[0]], grey_recipes[0])
        lines += published_comparison(cells[cells["binarized"]], runs[runs["binarized"]])
    return "\n".join(lines)


def binarized_legend(runs: pd.DataFrame, title: str) -> str:
    recipes = ", ".join(f"`{r}`" for r in dict.fromkeys(runs["recipe"]))
    return (
        f"Binarized recipes ({recipes}; `train.binarize: dynamic`) train on binarized {title}: each training "
        "image re-drawn as Bernoulli(grey level) whenever it is used; they are scored on one fixed binarization of "
        "the test set, the same for every run (Burda et al. 2016). On 0/1 targets the Bernoulli term is a true "
        "log-likelihood, so their −ELBO, reconstruction and KL are of those images, and their IW columns, over "
        f"{common_value(runs, 'iw_images')} test images with K={common_value(runs, 'iw_samples')}, give an upper "
        f"bound on the negative log-likelihood of binarized {title} (column `NLL upper bound (IW)`), the figure the "
        "literature reports. Another target than the grey-level recipes': their figures are not comparable with "
        "those, and the side-by-side table leaves them out."
    )


def verdict(ours: float, noise: float, theirs: float) -> str:
    """Ahead (a lower NLL bound) or behind a published figure by more than the combined noise of both
    sides, or level within it; with the difference and its ± interval either way."""
    d = ours - theirs
    if d < -noise:
        return f"ahead by {-d:.2f} (± {noise:.2f})"
    if d > noise:
        return f"behind by {d:.2f} (± {noise:.2f})"
    return f"level ({d:+.2f} ± {noise:.2f})"


def published_comparison(cells: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """The binarized cells' NLL bounds beside the published figures for their latent size, each judged
    ahead, level or behind: at the published K where the runs report it, against the noise of both sides
    (our spread over seeds and standard error over test images, and the published figure's own spread)."""
    if cells.empty:
        return []
    models = list(dict.fromkeys(name for figures in PUBLISHED.values() for name in figures))
    values = {name: v for figures in PUBLISHED.values() for name, v in figures.items()}
    spreads = {name: v for figures in PUBLISHED_SPREAD.values() for name, v in figures.items()}
    k, n = common_value(runs, "iw_samples"), common_value(runs, "iw_images")
    # At the published K (the first K of the same draws) where every run reports it; at our K otherwise.
    at_lit = bool(runs["iw_bound_lit"].notna().all())
    # (a float column: grey-level runs have none)
    k_lit = "/".join(str(v) for v in sorted({int(v) for v in runs["iw_samples_lit"]})) if at_lit else k
    col = "iw_bound_lit" if at_lit else "iw_bound"
    header = ["recipe", "family", "z", "−ELBO", f"NLL upper bound (K={k})"]
    header += [f"NLL upper bound (K={k_lit})", "SE over images", "noise"] if at_lit else ["SE over images", "noise"]
    header += [f"vs {name} ({values[name]:.2f} ± {spreads[name]:.2f})" for name in models]
    rows = []
    sides: dict[str, dict[str, list[str]]] = {name: {"ahead": [], "level": [], "behind": []} for name in models}
    for c in cells.itertuples():
        std, se = getattr(c, f"{col}_std"), getattr(c, f"{col}_se" if at_lit else "iw_bound_se")
        ours = math.hypot(0.0 if math.isnan(std) else std, se)
        row = [c.recipe, c.family, str(c.z), mean_std(c.total, c.total_std), mean_std(c.iw_bound, c.iw_bound_std)]
        if at_lit:
            row.append(mean_std(c.iw_bound_lit, c.iw_bound_lit_std))
        row += [number(se), number(ours)]
        for name in models:
            theirs = PUBLISHED.get(c.z, {}).get(name)
            if theirs is None:
                row.append(f"no published z={c.z} figure")
            elif c.collapsed or c.diverged:
                row.append("not compared: a seed collapsed or diverged")
            else:
                said = verdict(getattr(c, col), math.hypot(ours, PUBLISHED_SPREAD[c.z][name]), theirs)
                row.append(said)
                side = said.split()[0]
                sides[name][side].append(f"`{c.recipe}` {c.family} z={c.z} {said[len(side) + 1 :]}")
        rows.append(row)
    n_families, lo, hi = cells["family"].nunique(), cells["parameters"].min(), cells["parameters"].max()
    families = "one family" if n_families == 1 else f"{n_families} families"
    parameters = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
    z_known = " and ".join(f"z={z}" for z in PUBLISHED)
    missing = sorted(set(cells["z"]) - set(PUBLISHED))
    k_said = (
        f"both use K={k_lit} importance samples per image (ours: the first {k_lit} of our K={k}) on {n} test images"
        if at_lit and k_lit == str(PUBLISHED_SETUP["iw_samples"])
        else f"their bound uses K={PUBLISHED_SETUP['iw_samples']} importance samples per image, ours K={k_lit} on "
        f"{n} test images (more samples give a lower, tighter bound)"
    )
    lines = [
        "## Binarized MNIST beside published likelihoods",
        "",
        f"Published NLLs of dynamically binarized MNIST ({z_known}): {PUBLISHED_SOURCE}: "
        + "; ".join(f"{name} {values[name]:.2f} ± {spreads[name]:.2f} nats" for name in models)
        + ". What differs: theirs is "
        f"{PUBLISHED_SETUP['network']} (our `davidson_mlp`), ours {families} of {parameters} parameters; {k_said}; "
        f"their figures are means ± std over their own training runs, ours over seeds {common_value(runs, 'seed')}; "
        "their test binarization is another random draw."
        + (
            f" No published figure for {' or '.join(f'z={z}' for z in missing)} is known to us: those rows have none."
            if missing
            else ""
        ),
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] * len(header)) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        f"Each cell: mean ± std over seeds; SE over images: the K={k_lit} bound's standard error over the test "
        "images (mean over seeds); noise: ours, √(std² + SE²). A verdict counts the noise of both sides, "
        "√(std² + SE² + published spread²): ahead (a lower NLL bound, better) or behind only where our mean differs "
        "from the published figure by more than that, level otherwise; the difference and that ± follow.",
        "",
    ]
    for name in models:
        said = "; ".join(f"{side}: {', '.join(cells_) or 'none'}" for side, cells_ in sides[name].items())
        lines.append(f"- Against the {name} ({values[name]:.2f} ± {spreads[name]:.2f} nats): {said}.")
    return lines + [""]


def recipe_deltas(cells: pd.DataFrame, recipes: list[str]) -> list[str]:
    """Mean −ELBO of every recipe side by side, with each recipe's change from the first."""
    base = recipes[0]
    header = ["family", "z", *[f"−ELBO {r}" for r in recipes], *[f"Δ {r}" for r in recipes[1:]]]
    rows = []
    for (family, z), group in cells.groupby(["family", "z"], sort=False):
        by = group.set_index("recipe")
        row = [family, str(z), *[mean_std(by.at[r, "total"], by.at[r, "total_std"]) for r in recipes]]
        row += [number(by.at[r, "total"] - by.at[base, "total"], sign="+") for r in recipes[1:]]
        rows.append(row)
    return [
        f"## Recipes side by side (−ELBO, nats per image; Δ = change of the mean from `{base}`, negative is better)",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] * len(header)) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def study_comparison(runs: pd.DataFrame, recipe: str) -> list[str]:
    """The study's table next to ours in its apparent units, one figure per seed: the study is a single
    run, and a mean over seeds that include a collapsed or diverged one would say nothing."""
    cells = runs.groupby(CELL, sort=False)
    study = [(key, STUDY_TABLE.get(key[1:]), group) for key, group in cells]
    if not any(s for _, s, _ in study):
        return []
    seeds = " / ".join(str(s) for s in sorted(runs["seed"].unique()))
    lines = [
        "## Next to the study's table",
        "",
        "The study's numbers are assumed (not known) to be sums over the 16 images of the "
        f"last, partial test batch of 128. Ours (recipe `{recipe}`) in the same units are in the `last 16` "
        f"columns, one figure per seed ({seeds}): the study's are one run each.",
        "",
        "| family | z | study total | study recon | study KL | ours total (last 16) "
        "| ours recon (last 16) | ours KL (last 16) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (_, family, z), s, group in study:
        theirs = s or ("–",) * 3
        ours = [" / ".join(number(v, 1) for v in group[f"last_{t}"]) for t in TERMS]
        lines.append(f"| {family} | {z} | {theirs[0]} | {theirs[1]} | {theirs[2]} | {' | '.join(ours)} |")
    return lines + [""]


def chart_label(cell: str, diverged: int, seeds: int) -> str:
    """A cell's name in the charts; charts average only the seeds that did not diverge, and say so."""
    return cell if not diverged else f"{cell} ({diverged}/{seeds} diverged, not drawn)"


def load_curves(run_list: list[tuple[str, str, int, int]]) -> pd.DataFrame:
    """Each cell's per-epoch history, averaged over its seeds, in one long table with a `run` column
    (the cell's name) for dvc plots. A diverged seed (1e29 nats) would flatten every other line
    to zero, so it is left out, and its cell's label counts it."""
    frames = [pd.read_csv(paths.history(run_name(*r))).assign(cell=cell_name(*r[:3])) for r in run_list]
    blew_up = [diverged(f.drop(columns="cell")) for f in frames]
    counts = pd.DataFrame({"cell": [f["cell"].iloc[0] for f in frames], "diverged": blew_up})
    counts = counts.groupby("cell", sort=False)["diverged"].agg(["sum", "size"])
    kept = [f for f, d in zip(frames, blew_up) if not d] or [frames[0].iloc[:0]]
    curves = pd.concat(kept, ignore_index=True).groupby(["cell", "epoch"], sort=False).mean().reset_index()
    labels = {c: chart_label(c, int(k), int(n)) for c, (k, n) in counts.iterrows()}
    return curves.assign(cell=curves["cell"].map(labels)).rename(columns={"cell": "run"})


def chart_table(runs: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The comparison bars' data: every cell's means over its seeds that did not diverge (NaN if none),
    with the counts of all its seeds and the label the curves use."""
    drawn = aggregate(runs[~runs["diverged"]]) if (~runs["diverged"]).any() else cells.iloc[:0]
    table = cells[["cell", "recipe", "family", "z", "seeds", "collapsed", "diverged"]].merge(
        drawn[["cell", *METRICS, "total_std"]], on="cell", how="left"
    )
    table["cell"] = [chart_label(c, d, n) for c, d, n in zip(table["cell"], table["diverged"], table["seeds"])]
    return table.rename(columns={"cell": "run"})


def _rounded(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def _per_seed(runs: pd.DataFrame, col: str) -> dict:
    return {str(s): _rounded(v) for s, v in zip(runs["seed"], runs[col])}


def write_comparison(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    dataset: str,
    *,
    json_path: Path,
    cells_dir: Path,
    csv_path: Path,
    curves_path: Path,
    md_path: Path,
    png_path: Path,
) -> None:
    cells = aggregate(runs)
    # Everything, nested by recipe then cell: mean, std, min, max and each seed's value.
    comparison: dict[str, dict] = {}
    for c in cells.itertuples():
        mine = runs[runs["cell"] == c.cell]
        # A binarized cell says so, with its NLL bound's SE per seed; a grey-level cell's entry is as it always was.
        binarized = (
            {"binarized": True, **{col: _per_seed(mine, col) for col in BINARIZED_METRICS}} if c.binarized else {}
        )
        comparison.setdefault(c.recipe, {})[f"{c.family}-{c.z}"] = {
            "seeds": int(c.seeds),
            "collapsed": int(c.collapsed),
            "diverged": int(c.diverged),
            **{
                col: {
                    "mean": _rounded(getattr(c, col)),
                    "std": _rounded(getattr(c, f"{col}_std")),
                    "min": _rounded(getattr(c, f"{col}_min")),
                    "max": _rounded(getattr(c, f"{col}_max")),
                    "per_seed": _per_seed(mine, col),
                }
                for col in METRICS
            },
            **binarized,
        }
        # The DVC metric of the cell: a flat row for `dvc metrics show`.
        write_json(
            cells_dir / f"{c.cell}.json",
            {
                **{k: _rounded(getattr(c, k)) for k, m in METRICS.items() if m.cell},
                "total_std": _rounded(c.total_std),
                **({k: _rounded(getattr(c, k)) for k, m in BINARIZED_METRICS.items() if m.cell} if c.binarized else {}),
                "seeds": int(c.seeds),
                "collapsed": int(c.collapsed),
                "diverged": int(c.diverged),
            },
        )
    write_json(json_path, comparison)
    write_text(csv_path, chart_table(runs, cells).to_csv(index=False, float_format="%.4f"))
    write_text(curves_path, curves.to_csv(index=False, float_format="%.4f"))
    write_text(md_path, markdown(runs, cells, dataset))
    bar_chart(cells, png_path, DATASETS[dataset].title)


def bar_chart(cells: pd.DataFrame, path: Path, title: str) -> None:
    """Every cell's test metrics side by side, mean with ± std error bars, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["total", "iw_bound", "recon", "kl", "mutual_info"]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 1.2 + 0.25 * max(len(cells), 10)), sharey=True)
    colors = ["tab:red" if c or d else "tab:blue" for c, d in zip(cells["collapsed"], cells["diverged"])]
    for ax, c in zip(axes, cols):
        ax.barh(cells["cell"], cells[c], xerr=cells[f"{c}_std"].fillna(0.0), color=colors, capsize=2)
        ax.set_title(f"{METRICS[c].header} (nats)")
        ax.grid(axis="x", alpha=0.3)
        # Differences of a few nats on ~100: zoom in, on the cells that did not diverge (theirs run off).
        sane = cells.loc[cells["diverged"] == 0, c] if (cells["diverged"] == 0).any() else cells[c]
        sane = sane.dropna()  # a diverged run's figure may be null
        if sane.empty:
            continue
        if c in ("total", "iw_bound", "recon"):
            ax.set_xlim(sane.min() * 0.95, sane.max() * 1.01)
        elif c == "kl":
            ax.set_xlim(0, max(sane.max() * 1.3, 1e-3))
    axes[0].invert_yaxis()
    fig.suptitle(f"{title}: test metrics per image, mean ± std over seeds (red: a seed collapsed or diverged)")
    fig.tight_layout()
    save_figure(fig, path)
