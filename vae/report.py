"""The comparison as Markdown (metrics/comparison.md): a table per recipe, bold only where the noise
allows, the legend that says how to read it, and the sections that set our cells beside the study's table
and the published likelihoods. The numbers come from vae/cells.py."""

from __future__ import annotations

import math

import pandas as pd

from vae.cells import CELL, PUBLISHED, PUBLISHED_SETUP, PUBLISHED_SOURCE, PUBLISHED_SPREAD, judge, rank
from vae.data import DATASETS
from vae.losses import TERMS
from vae.metrics import DIVERGED_NATS, METRICS

# Why each column without a direction (vae/metrics.py) is never bold, as the comparison's legend says it.
NOT_RANKED = {
    "kl": "a lower KL is not a better model, only another point on the rate–distortion trade-off (less "
    "information carried by z, paid for in reconstruction)",
    "active_units": "every cell that takes part has all z units active (fewer is a collapse, which keeps the cell "
    "out), so there is nothing to rank",
    "elbo_gap": "the ELBO gap is a diagnostic of the encoder, not a quality: a decoder that ignores z has a gap of 0",
    "mutual_info": "MI is a rate, like KL: how much z carries, not how good the model is",
}

# Ranked in an IWAE-trained recipe's table: it trains the bound, so its -ELBO is looser by design.
IWAE_RANKED = ("iw_bound",)

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


def number(v: float, digits: int = 2, sign: str = "") -> str:
    """Fixed decimals, or 3 significant digits for the 1e20s of a diverged run."""
    return f"{v:{sign}.3g}" if abs(v) >= 1e6 else f"{v:{sign}.{digits}f}"


def mean_std(mean: float, std: float, digits: int = 2) -> str:
    return number(mean, digits) if math.isnan(std) else f"{number(mean, digits)} ± {number(std, digits)}"


def figure(c, col: str) -> str:
    """A cell's mean ± std, with how many of its seeds are in it where not all are (vae/cells.py)."""
    value = getattr(c, col)
    if math.isnan(value):
        return "–"
    text = mean_std(value, getattr(c, f"{col}_std"))
    se = c.mutual_info_se
    if col == "mutual_info" and value < 0 and not math.isnan(se):  # a collapsed cell's MI is 0 up to its MC noise
        text += f" (0 within noise: SE {se:.2f})" if value >= -2 * se else f" (SE {se:.2f})"
    return text if c.in_mean == c.seeds else f"{text} ({c.in_mean}/{c.seeds} seeds)"


def flag_column(cells: pd.DataFrame, runs: pd.DataFrame, flag: str, reason: str) -> list[str]:
    """Per cell "0/n", or "⚠ k/n: seed S, why" for the first of its k flagged seeds."""
    first = runs[runs[flag]].groupby("cell")[["seed", reason]].first()
    return [
        f"⚠ {k}/{n}: seed {first.at[c, 'seed']}, {first.at[c, reason]}" if k else f"0/{n}"
        for k, n, c in zip(cells[flag], cells["seeds"], cells["cell"])
    ]


def recipe_table(cells: pd.DataFrame, runs: pd.DataFrame, binarized: bool = False) -> str:
    """One recipe's cells as a Markdown table: mean ± std over seeds, bold where the noise allows,
    in the columns that have a better direction (an IWAE recipe's: its bounds alone). A binarized recipe's
    columns are named for what they are there."""
    table = cells[["family", "z"]].astype(str).copy()
    iwae = (cells["objective"] == "iwae").all()
    for col, metric in METRICS.items():
        how = metric.better if not iwae or col in IWAE_RANKED else None
        marks = rank(cells, col, how) if how else [""] * len(cells)
        text = [figure(c, col) for c in cells.itertuples()]
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
    title = DATASETS[dataset].title
    lines = [f"# VAE comparison on {title}", "", units_legend(runs, cells, grey, title), "", ranking_legend(cells), ""]
    if binarized:
        lines += [binarized_legend(runs[runs["binarized"]], title), ""]
    for recipe in recipes:
        lines += recipe_section(cells[cells["recipe"] == recipe], runs, recipe, title)
    lines += flag_legends(cells)
    if len(grey_recipes) > 1:
        lines += recipe_deltas(cells[cells["recipe"].isin(grey_recipes)], grey_recipes)
    if dataset == "mnist":  # the study's table and the published figures are of MNIST: set nothing else beside them
        if grey_recipes:
            lines += study_comparison(runs[runs["recipe"] == grey_recipes[0]], grey_recipes[0])
        lines += published_comparison(cells[cells["binarized"]], runs[runs["binarized"]])
    return "\n".join(lines)


def units_legend(runs: pd.DataFrame, cells: pd.DataFrame, grey: pd.DataFrame, title: str) -> str:
    n_test = common_value(runs, "test_images")
    log_n = " / ".join(f"{math.log(n):.2f}" for n in sorted(set(runs["test_images"])))
    return (
        f"Test set ({n_test} images), **nats per image**, each cell the mean ± sample std over the seeds in its mean "
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
        f"is still limited by the test-set size: at most log N = {log_n} nats. It is estimated from one z per "
        "image: a collapsed cell's MI is 0 and its estimate may come out a little below, shown with its "
        "Monte Carlo standard error."
    )


def ranking_legend(cells: pd.DataFrame) -> str:
    lower, higher = ([m.header for m in METRICS.values() if m.better == how] for how in ("min", "max"))
    ranked = f"lower is better for {', '.join(lower)}" + (f"; higher for {', '.join(higher)}" if higher else "")
    not_ranked = "; ".join(f"{m.header}, as {NOT_RANKED[c]}" for c, m in METRICS.items() if m.better is None)
    iwae = set(cells.loc[cells["objective"] == "iwae", "recipe"])
    return (
        "**Bold**: best within a recipe and latent size among the cells with no collapsed or diverged seed, only "
        "where its mean ± std does not overlap any other such cell's; † : tied for best (the intervals overlap). "
        f"Ranked: {ranked}. Never bold: {not_ranked}. "
        + (
            f"Recipe {', '.join(f'`{r}`' for r in sorted(iwae))} trains on the importance-weighted bound "
            "(`train.objective: iwae`), not the ELBO, so its −ELBO is looser than an ELBO-trained model's by "
            "design: its table ranks by the NLL bound alone. "
            if iwae
            else ""
        )
        + "A cell's figures are of the seeds that neither collapsed nor diverged, with (k/n seeds) where that is "
        "fewer than all; a cell with no healthy seed shows every seed that did not diverge; a diverged seed is in no "
        "mean. Cells "
        "with a collapsed or diverged seed are never marked and are not compared. Recipes are defined in "
        "params.yaml (`train`, overridden by `recipe.NAME`, then by `recipe.NAME.families.FAMILY`)."
    )


def recipe_section(cells: pd.DataFrame, runs: pd.DataFrame, recipe: str, title: str) -> list[str]:
    lines = [f"## Recipe `{recipe}`", ""]
    on_bits = cells.loc[cells["binarized"], "cell"]
    if len(on_bits):  # a recipe may binarize some families only (recipe.NAME.families.FAMILY)
        which = "All cells are" if len(on_bits) == len(cells) else f"Cells {', '.join(on_bits)} are"
        lines += [f"{which} on binarized {title}: their IW bound is an upper bound on the NLL.", ""]
    return lines + [recipe_table(cells, runs, binarized=len(on_bits) == len(cells)), ""]


def flag_legends(cells: pd.DataFrame) -> list[str]:
    lines = []
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
            "decoder predicting 0.5 for every pixel (the seed's figures are of a broken model, in no mean).",
            "",
        ]
    return lines


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


def published_comparison(cells: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """The binarized cells' NLL bounds beside the published figures for their latent size, each judged
    ahead, level or behind (vae/cells.py's judge): at the published K where the runs report it, against the
    noise of both sides."""
    if cells.empty:
        return []
    models = list(dict.fromkeys(name for figures in PUBLISHED.values() for name in figures))
    values = {name: v for figures in PUBLISHED.values() for name, v in figures.items()}
    spreads = {name: v for figures in PUBLISHED_SPREAD.values() for name, v in figures.items()}
    k = common_value(runs, "iw_samples")
    # At the published K (the first K of the same draws) where every run in a mean reports it; at our K
    # otherwise. A diverged seed's bounds are null and it is in no mean: it does not decide.
    counted = runs[runs["in_mean"]]
    at_lit = bool(counted["iw_bound_lit"].notna().all())
    # (a float column: grey-level runs have none)
    k_lit = "/".join(str(v) for v in sorted({int(v) for v in counted["iw_samples_lit"]})) if at_lit else k
    header = ["recipe", "family", "z", "−ELBO", f"NLL upper bound (K={k})"]
    header += [f"NLL upper bound (K={k_lit})"] if at_lit else []
    header += ["SE over images", "noise", *(f"vs {name} ({values[name]:.2f} ± {spreads[name]:.2f})" for name in models)]
    rows, sides = published_rows(cells, at_lit, models)
    return (
        published_intro(cells, runs, k, k_lit, at_lit, models, values, spreads)
        + ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
        + ["| " + " | ".join(r) + " |" for r in rows]
        + ["", published_outro(k_lit), ""]
        + [
            f"- Against the {name} ({values[name]:.2f} ± {spreads[name]:.2f} nats): {said(sides[name])}."
            for name in models
        ]
        + [""]
    )


def published_rows(cells: pd.DataFrame, at_lit: bool, models: list[str]) -> tuple[list[list[str]], dict]:
    """The table's row per binarized cell, and per published model the cells ahead, level and behind."""
    rows = []
    sides: dict[str, dict[str, list[str]]] = {name: {"ahead": [], "level": [], "behind": []} for name in models}
    for c in cells.itertuples():
        judged = judge(c, at_lit)
        rows.append(
            [c.recipe, c.family, str(c.z), figure(c, "total"), figure(c, "iw_bound")]
            + ([figure(c, "iw_bound_lit")] if at_lit else [])
            + [number(judged.se), number(judged.noise), *(judged.said[name] for name in models)]
        )
        for name in models:
            side = judged.said[name].split()[0]
            if side in sides[name]:
                sides[name][side].append(f"`{c.recipe}` {c.family} z={c.z} {judged.said[name][len(side) + 1 :]}")
    return rows, sides


def said(sides: dict[str, list[str]]) -> str:
    """The verdict line's body: which cells are ahead, level and behind."""
    return "; ".join(f"{side}: {', '.join(cells_) or 'none'}" for side, cells_ in sides.items())


def published_intro(cells, runs, k, k_lit, at_lit, models, values, spreads) -> list[str]:
    """What the published figures are and how their setup differs from ours."""
    n_families, lo, hi = cells["family"].nunique(), cells["parameters"].min(), cells["parameters"].max()
    families = "one family" if n_families == 1 else f"{n_families} families"
    parameters = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
    missing = sorted(set(cells["z"]) - set(PUBLISHED))
    n = common_value(runs, "iw_images")
    k_said = (
        f"both use K={k_lit} importance samples per image (ours: the first {k_lit} of our K={k}) on {n} test images"
        if at_lit and k_lit == str(PUBLISHED_SETUP["iw_samples"])
        else f"their bound uses K={PUBLISHED_SETUP['iw_samples']} importance samples per image, ours K={k_lit} on "
        f"{n} test images (more samples give a lower, tighter bound)"
    )
    iwae = sorted(set(cells.loc[cells["objective"] == "iwae", "recipe"]))
    objective = (
        f"; recipe {', '.join(f'`{r}`' for r in iwae)} trains on the importance-weighted bound, not the ELBO their "
        "models train on, so its rows say what a Gaussian VAE of that size can reach, not the same training"
        if iwae
        else ""
    )
    return [
        "## Binarized MNIST beside published likelihoods",
        "",
        f"Published NLLs of dynamically binarized MNIST ({' and '.join(f'z={z}' for z in PUBLISHED)}): "
        f"{PUBLISHED_SOURCE}: "
        + "; ".join(f"{name} {values[name]:.2f} ± {spreads[name]:.2f} nats" for name in models)
        + ". What differs: theirs is "
        f"{PUBLISHED_SETUP['network']} (our `davidson_mlp`), ours {families} of {parameters} parameters; {k_said}"
        f"{objective}; their figures are means ± std over their own training runs, ours over seeds "
        f"{common_value(runs, 'seed')}; their test binarization is another random draw."
        + (
            f" No published figure for {' or '.join(f'z={z}' for z in missing)} is known to us: those rows have none."
            if missing
            else ""
        ),
        "",
    ]


def published_outro(k_lit: str) -> str:
    return (
        f"Each cell: mean ± std over seeds; SE over images: the K={k_lit} bound's standard error over the test "
        "images (mean over the seeds in the mean); noise: ours, √(std² + SE²). A verdict counts the noise of both sides, "
        "√(std² + SE² + published spread²): ahead (a lower NLL bound, better) or behind only where our mean differs "
        "from the published figure by more than that, level otherwise; the difference and that ± follow."
    )


def recipe_deltas(cells: pd.DataFrame, recipes: list[str]) -> list[str]:
    """Mean −ELBO of every recipe side by side, with each recipe's change from the first."""
    base = recipes[0]
    header = ["family", "z", *[f"−ELBO {r}" for r in recipes], *[f"Δ {r}" for r in recipes[1:]]]
    rows = []
    for (family, z), group in cells.groupby(["family", "z"], sort=False):
        by = {c.recipe: c for c in group.itertuples()}  # a subset recipe has some families only
        row = [family, str(z), *[figure(by[r], "total") if r in by else "–" for r in recipes]]
        deltas = [by[r].total - by[base].total if r in by and base in by else math.nan for r in recipes[1:]]
        row += ["–" if math.isnan(d) else number(d, sign="+") for d in deltas]
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
