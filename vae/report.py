"""Aggregate per-run metrics into the comparison table (JSON, CSV and Markdown)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vae import io, paths
from vae.config import run_name

TERMS = ("total", "recon", "kl")
# Columns of the comparison, in order, with their headers; integer columns print without decimals.
COLUMNS = {"total": "−ELBO", "recon": "reconstruction", "kl": "KL", "nll": "IS-NLL",
           "elbo_gap": "ELBO gap", "active_units": "active units", "mutual_info": "MI"}
INTEGER = {"active_units"}
METRIC_KEYS = ("nll", "elbo_gap", "active_units", "mutual_info", "collapsed")

# The study's own table, as published. Its units look like a sum over the
# 16 images of the last, partial test batch (10000 = 78 * 128 + 16); our
# metrics give the same sum in `study_last_batch` for comparison.
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


def load_metrics(run_list: list[tuple[str, str, int]]) -> pd.DataFrame:
    """One row per run, in params order; the run list comes from params, not a glob,
    so files left behind by runs no longer in the matrix are ignored."""
    rows = []
    for recipe, family, z in run_list:
        run = run_name(recipe, family, z)
        path = paths.metrics(run)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run `dvc repro evaluate@{run}`")
        m = json.loads(path.read_text())
        last = m["study_last_batch"]
        rows.append({"run": run, "recipe": recipe, "family": family, "z": z,
                     **{t: m[t] for t in TERMS}, **{k: m[k] for k in METRIC_KEYS},
                     "collapse_reasons": "; ".join(m["collapse_reasons"]), "parameters": m["parameters"],
                     **{f"last_{t}": last[t] for t in TERMS}, "last_images": last["images"],
                     "test_images": m["test_images"], "z_samples": m["z_samples"],
                     "nll_samples": m["nll_samples"], "nll_images": m["nll_images"]})
    return pd.DataFrame(rows)


def bold_best(df: pd.DataFrame, best: dict[str, str], digits: int = 2) -> pd.DataFrame:
    """Format numbers, wrapping the best value of each column (min or max) in ** **."""
    out = df.copy()
    for col, how in best.items():
        d = 0 if col in INTEGER else digits
        vals = df[col].round(d)
        target = vals.min() if how == "min" else vals.max()
        out[col] = [f"**{v:.{d}f}**" if v == target else f"{v:.{d}f}" for v in vals]
    return out


def _one(df: pd.DataFrame, col: str) -> str:
    """The value a column has in every row, or all of them joined by '/'."""
    vals = sorted(set(df[col]))
    return str(vals[0]) if len(vals) == 1 else "/".join(map(str, vals))


def recipe_table(df: pd.DataFrame, best: dict[str, str]) -> str:
    """One recipe's runs as a Markdown table, the best value of each column in bold."""
    cols = list(COLUMNS)
    table = bold_best(df[["family", "z", *cols]], best)
    for c in set(cols) - set(best):
        table[c] = df[c].map(lambda v, c=c: f"{v:.0f}" if c in INTEGER else f"{v:.2f}")
    table["collapse"] = ["⚠ " + r if c else "" for c, r in zip(df["collapsed"], df["collapse_reasons"])]
    table["parameters"] = df["parameters"].map("{:,}".format)
    return table.rename(columns=COLUMNS).to_markdown(index=False, disable_numparse=True)


def markdown(df: pd.DataFrame, best: dict[str, str]) -> str:
    rules = ", ".join(f"{COLUMNS[c]} {how}" for c, how in best.items())
    recipes = list(dict.fromkeys(df["recipe"]))
    lines = [
        "# VAE comparison on MNIST",
        "",
        f"Test set ({_one(df, 'test_images')} images). −ELBO, reconstruction, KL and IS-NLL are in "
        f"**nats per image**, averaged over images ({_one(df, 'z_samples')} z sample(s) per image for the "
        f"ELBO terms; IS-NLL = −log p(x) with K={_one(df, 'nll_samples')} importance samples on a fixed "
        f"random subset of {_one(df, 'nll_images')} test images). ELBO gap = −ELBO − IS-NLL. "
        "Active units: latent dimensions with Var_x(E[z_d|x]) > threshold; MI: I_q(x; z) in nats. "
        f"Bold: best per column within a recipe ({rules}). Recipes are defined in params.yaml "
        "(`train`, overridden by `recipe.NAME`, then by `recipe.NAME.families.FAMILY`).",
        "",
    ]
    for recipe in recipes:
        lines += [f"## Recipe `{recipe}`", "", recipe_table(df[df["recipe"] == recipe], best), ""]
    if df["collapsed"].any():
        lines += ["⚠ marks posterior collapse: fewer active units than z, or a latent dimension "
                  "whose KL is below `eval.collapse_kl`. A collapsed run's low KL is not a virtue.", ""]
    if len(recipes) > 1:
        lines += recipe_deltas(df, recipes)
    lines += study_comparison(df[df["recipe"] == recipes[0]], recipes[0])
    return "\n".join(lines)


def recipe_deltas(df: pd.DataFrame, recipes: list[str]) -> list[str]:
    """−ELBO and IS-NLL of every recipe side by side, with each recipe's change from the first."""
    base = recipes[0]
    wide = df.pivot_table(index=["family", "z"], columns="recipe", values=["total", "nll"], sort=False)
    header = ["family", "z"]
    for r in recipes:
        header += [f"−ELBO {r}"] + ([f"Δ {r}"] if r != base else [])
    for r in recipes:
        header += [f"IS-NLL {r}"]
    rows = []
    for (family, z), v in wide.iterrows():
        cells = [family, str(z)]
        for r in recipes:
            cells.append(f"{v[('total', r)]:.2f}")
            if r != base:
                cells.append(f"{v[('total', r)] - v[('total', base)]:+.2f}")
        cells += [f"{v[('nll', r)]:.2f}" for r in recipes]
        rows.append(cells)
    return [f"## Recipes side by side (nats per image; Δ = change from `{base}`, negative is better)", "",
            "| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |",
            *("| " + " | ".join(c) + " |" for c in rows), ""]


def study_comparison(df: pd.DataFrame, recipe: str) -> list[str]:
    study = [(r, STUDY_TABLE.get((r.family, r.z))) for r in df.itertuples()]
    if not any(s for _, s in study):
        return []
    lines = [
        "## Next to the study's table",
        "",
        "The study's numbers are assumed (not known) to be sums over the 16 images of the "
        f"last, partial test batch of 128. Ours (recipe `{recipe}`) in the same units are in the "
        "`last 16` columns.",
        "",
        "| family | z | study total | study recon | study KL | ours total (last 16) "
        "| ours recon (last 16) | ours KL (last 16) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r, s in study:
        s = s or ("–",) * 3
        lines.append(f"| {r.family} | {r.z} | {s[0]} | {s[1]} | {s[2]} | "
                     f"{r.last_total:.1f} | {r.last_recon:.1f} | {r.last_kl:.1f} |")
    return lines + [""]


def load_curves(run_list: list[tuple[str, str, int]]) -> pd.DataFrame:
    """Every run's per-epoch history in one long table with a `run` column, for dvc plots."""
    names = [run_name(*r) for r in run_list]
    curves = pd.concat([pd.read_csv(paths.history(n)).assign(run=n) for n in names], ignore_index=True)
    return curves[["run", *[c for c in curves.columns if c != "run"]]]


def write_comparison(df: pd.DataFrame, curves: pd.DataFrame, best: dict[str, str], json_path: Path,
                     csv_path: Path, curves_path: Path, md_path: Path, png_path: Path) -> None:
    # Nested by recipe, so `dvc metrics diff` shows keys like tuned.conv-2.total.
    comparison: dict[str, dict] = {}
    for r in df.itertuples():
        comparison.setdefault(r.recipe, {})[f"{r.family}-{r.z}"] = {
            **{c: round(float(getattr(r, c)), 4) for c in COLUMNS if c not in INTEGER},
            **{c: int(getattr(r, c)) for c in INTEGER}, "collapsed": bool(r.collapsed)}
    io.write_json(json_path, comparison)
    io.write_text(csv_path, df[["run", "recipe", "family", "z", *COLUMNS]].to_csv(index=False, float_format="%.4f"))
    io.write_text(curves_path, curves.to_csv(index=False, float_format="%.4f"))
    io.write_text(md_path, markdown(df, best))
    bar_chart(df, png_path)


def bar_chart(df: pd.DataFrame, path: Path) -> None:
    """The final test metrics of every run side by side, one panel per metric."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["total", "nll", "recon", "kl", "mutual_info"]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 1.2 + 0.25 * max(len(df), 10)), sharey=True)
    colors = ["tab:red" if c else "tab:blue" for c in df["collapsed"]]
    for ax, c in zip(axes, cols):
        ax.barh(df["run"], df[c], color=colors)
        ax.set_title(f"{COLUMNS[c]} (nats)")
        ax.grid(axis="x", alpha=0.3)
        if c in ("total", "nll", "recon"):  # differences of a few nats on ~100: zoom in
            ax.set_xlim(df[c].min() * 0.95, df[c].max() * 1.01)
    axes[0].invert_yaxis()
    fig.suptitle("Test metrics per image (red: posterior collapse flagged)")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
