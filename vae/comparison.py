"""The files compare writes: the nested JSON of every cell, one flat DVC metric per cell, the bars' table
and chart, and the per-epoch curves; and the Markdown of vae/report.py. Each cell's figures are of the
seeds in its mean (vae/cells.py), in every file alike."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from vae import paths
from vae.atomic import save_figure, write_json, write_text
from vae.cells import aggregate
from vae.data import DATASETS
from vae.metrics import BINARIZED_METRICS, METRICS
from vae.params import cell_name, run_name
from vae.report import markdown


def chart_label(c) -> str:
    """A cell's name in the charts, with the seeds its figures leave out (an aggregate() row)."""
    left_out = c.seeds - c.in_mean
    if not left_out:
        return c.cell
    why = [f"{k} {what}" for k, what in ((c.diverged, "diverged"), (left_out - c.diverged, "collapsed")) if k]
    return f"{c.cell} ({c.in_mean}/{c.seeds} seeds; left out: {', '.join(why)})"


def load_curves(run_list: list[tuple[str, str, int, int]], runs: pd.DataFrame) -> pd.DataFrame:
    """Each cell's per-epoch history, averaged over the seeds in its mean (runs' `in_mean`, vae/cells.py), in
    one long table with a `run` column (the cell's label) for dvc plots. A diverged seed (1e29 nats) would
    flatten every other line to zero, and a collapsed one blend two regimes, as in the table."""
    kept = set(runs.loc[runs["in_mean"], "run"])
    frames = [
        pd.read_csv(paths.history(run_name(*r))).assign(cell=cell_name(*r[:3]))
        for r in run_list
        if run_name(*r) in kept
    ] or [pd.DataFrame(columns=["cell", "epoch"])]
    curves = pd.concat(frames, ignore_index=True).groupby(["cell", "epoch"], sort=False).mean().reset_index()
    labels = {c.cell: chart_label(c) for c in aggregate(runs).itertuples()}
    return curves.assign(cell=curves["cell"].map(labels)).rename(columns={"cell": "run"})


def chart_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The comparison bars' data: every cell's means over the seeds in its mean (NaN if none), with the
    counts of all its seeds and the label the curves use."""
    table = cells[["cell", "recipe", "family", "z", "seeds", "in_mean", "collapsed", "diverged", *METRICS, "total_std"]]
    return table.assign(cell=[chart_label(c) for c in cells.itertuples()]).rename(columns={"cell": "run"})


def _rounded(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def _per_seed(runs: pd.DataFrame, col: str) -> dict:
    return {str(s): _rounded(v) for s, v in zip(runs["seed"], runs[col])}


def cell_entry(c, mine: pd.DataFrame) -> dict:
    """A cell in metrics/comparison.json: counts, the seeds in its mean, and per metric the mean, std, min and
    max over them with every seed's own value; a binarized cell says so, with its NLL bound's SE per seed."""
    binarized = {"binarized": True, **{col: _per_seed(mine, col) for col in BINARIZED_METRICS}} if c.binarized else {}
    return {
        "seeds": int(c.seeds),
        "collapsed": int(c.collapsed),
        "diverged": int(c.diverged),
        "seeds_in_mean": [int(s) for s in mine.loc[mine["in_mean"], "seed"]],
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


def cell_metric(c) -> dict:
    """The DVC metric of the cell (metrics/cells/CELL.json): a flat row for `dvc metrics show`."""
    return {
        **{k: _rounded(getattr(c, k)) for k, m in METRICS.items() if m.cell},
        "total_std": _rounded(c.total_std),
        **({k: _rounded(getattr(c, k)) for k, m in BINARIZED_METRICS.items() if m.cell} if c.binarized else {}),
        "seeds": int(c.seeds),
        "seeds_in_mean": int(c.in_mean),
        "collapsed": int(c.collapsed),
        "diverged": int(c.diverged),
    }


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
    comparison: dict[str, dict] = {}  # nested by recipe, then cell
    for c in cells.itertuples():
        comparison.setdefault(c.recipe, {})[f"{c.family}-{c.z}"] = cell_entry(c, runs[runs["cell"] == c.cell])
        write_json(cells_dir / f"{c.cell}.json", cell_metric(c))
    write_json(json_path, comparison)
    write_text(csv_path, chart_table(cells).to_csv(index=False, float_format="%.4f"))
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
        # Differences of a few nats on ~100: zoom in (a cell's figures leave out diverged seeds: vae/cells.py).
        sane = cells[c].dropna()
        if sane.empty:
            continue
        if c in ("total", "iw_bound", "recon"):
            ax.set_xlim(sane.min() * 0.95, sane.max() * 1.01)
        elif c == "kl":
            ax.set_xlim(0, max(sane.max() * 1.3, 1e-3))
    axes[0].invert_yaxis()
    fig.suptitle(
        f"{title}: test metrics per image, mean ± std over the seeds in each cell's mean "
        "(red: a seed collapsed or diverged, and is left out where others did not)"
    )
    fig.tight_layout()
    save_figure(fig, path)
