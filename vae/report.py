"""Aggregate per-run metrics into the comparison table (JSON, CSV and Markdown)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vae import io, paths

TERMS = ("total", "recon", "kl")
LABELS = {"total": "total (−ELBO)", "recon": "reconstruction", "kl": "KL"}

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


def load_metrics(run_list: list[tuple[str, int]]) -> pd.DataFrame:
    """One row per run, in params order; the run list comes from params, not a glob,
    so files left behind by runs no longer in the matrix are ignored."""
    rows = []
    for family, z in run_list:
        path = paths.metrics(f"{family}-{z}")
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run `dvc repro evaluate@{family}-{z}`")
        m = json.loads(path.read_text())
        last = m["study_last_batch"]
        rows.append({"run": f"{family}-{z}", "family": family, "z": z,
                     **{t: m[t] for t in TERMS}, "parameters": m["parameters"],
                     **{f"last_{t}": last[t] for t in TERMS}, "last_images": last["images"],
                     "test_images": m["test_images"], "z_samples": m["z_samples"]})
    return pd.DataFrame(rows)


def bold_best(df: pd.DataFrame, best: dict[str, str], digits: int = 2) -> pd.DataFrame:
    """Format numbers, wrapping the best value of each column (min or max) in ** **."""
    out = df.copy()
    for col, how in best.items():
        vals = df[col].round(digits)
        target = vals.min() if how == "min" else vals.max()
        out[col] = [f"**{v:.{digits}f}**" if v == target else f"{v:.{digits}f}" for v in vals]
    return out


def markdown(df: pd.DataFrame, best: dict[str, str]) -> str:
    table = bold_best(df[["family", "z", *TERMS, "parameters"]], best)
    table = table.rename(columns=LABELS)
    rules = ", ".join(f"{LABELS[c]}: {how}" for c, how in best.items())
    lines = [
        "# VAE comparison on MNIST",
        "",
        f"Test set ({_one(df, 'test_images')} images), **nats per image**, mean over images "
        f"({_one(df, 'z_samples')} z sample(s) per image). Bold: best per column ({rules}).",
        "",
        table.to_markdown(index=False, disable_numparse=True),
        "",
    ]
    study = [(r, STUDY_TABLE.get((r.family, r.z))) for r in df.itertuples()]
    if any(s for _, s in study):
        lines += [
            "## Next to the study's table",
            "",
            "The study's numbers are assumed (not known) to be sums over the 16 images of the "
            "last, partial test batch of 128. Ours in the same units are in the `last 16` columns.",
            "",
            "| family | z | study total | study recon | study KL | ours total (last 16) "
            "| ours recon (last 16) | ours KL (last 16) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r, s in study:
            s = s or ("–",) * 3
            lines.append(f"| {r.family} | {r.z} | {s[0]} | {s[1]} | {s[2]} | "
                         f"{r.last_total:.1f} | {r.last_recon:.1f} | {r.last_kl:.1f} |")
        lines.append("")
    return "\n".join(lines)


def _one(df: pd.DataFrame, col: str) -> str:
    vals = sorted(set(df[col]))
    return str(vals[0]) if len(vals) == 1 else "/".join(map(str, vals))


def load_curves(run_list: list[tuple[str, int]]) -> pd.DataFrame:
    """Every run's per-epoch history in one long table with a `run` column, for dvc plots."""
    frames = [pd.read_csv(paths.history(f"{f}-{z}")).assign(run=f"{f}-{z}") for f, z in run_list]
    curves = pd.concat(frames, ignore_index=True)
    return curves[["run", *[c for c in curves.columns if c != "run"]]]


def write_comparison(df: pd.DataFrame, curves: pd.DataFrame, best: dict[str, str],
                     json_path: Path, csv_path: Path, curves_path: Path, md_path: Path) -> None:
    io.write_json(json_path, {r.run: {t: round(getattr(r, t), 4) for t in TERMS}
                              for r in df.itertuples()})
    io.write_text(csv_path, df[["run", "family", "z", *TERMS]].to_csv(index=False, float_format="%.4f"))
    io.write_text(curves_path, curves.to_csv(index=False, float_format="%.4f"))
    io.write_text(md_path, markdown(df, best))
