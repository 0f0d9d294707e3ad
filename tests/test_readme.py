"""The README's result tables are the committed metrics, not a stale copy of them."""
import json
import re
from pathlib import Path

import pytest

from vae.report import mean_std, number

ROOT = Path(__file__).resolve().parents[1]


def readme_tables(heading: str) -> dict[str, list[dict[str, str]]]:
    """Rows of each table under a `### HEADING `NAME`` heading, keyed by recipe."""
    tables, recipe, header = {}, None, None
    for line in (ROOT / "README.md").read_text().splitlines():
        if m := re.match(rf"### {heading} `(\w+)`", line):
            recipe, header = m[1], None
            tables[recipe] = []
        elif line.startswith("#"):
            recipe = None
        elif recipe and line.startswith("|"):
            cells = [c.strip().strip("*").rstrip(" †") for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(cells[0]) <= set("-: "):
                tables[recipe].append(dict(zip(header, cells)))
    return tables


def test_readme_shows_every_committed_cell_as_mean_and_std_over_seeds():
    cells = sorted((ROOT / "metrics" / "cells").glob("*.json"))
    if not cells:
        pytest.skip("no committed 3-seed results yet (metrics/cells)")
    shown = {(recipe, r["family"], r["z"]): r for recipe, rows in readme_tables("Recipe").items() for r in rows}
    for path in cells:
        recipe, family, z = path.stem.split("-")
        m = json.loads(path.read_text())
        row = shown.pop((recipe, family, z), None)
        assert row is not None, f"README: no row for {path.stem} under ### Recipe `{recipe}`"
        assert row["−ELBO"] == mean_std(m["total"], m["total_std"]), path.stem
        for col, key in (("reconstruction", "recon"), ("KL", "kl"), ("IW bound", "iw_bound")):
            assert row[col].split(" ± ")[0] == number(m[key]), f"README: {path.stem} {col}"
        for col in ("collapsed", "diverged"):  # "0/3", or "⚠ 1/3: why"
            assert row[col].removeprefix("⚠ ").startswith(f"{m[col]}/{m['seeds']}"), f"README: {path.stem} {col}"
    assert not shown, f"README shows cells with no committed metrics: {sorted(shown)}"


def test_readme_single_seed_tables_are_the_files_they_came_from():
    """Until the 3-seed rerun lands, the single-seed results of commit 68811f5 stay, with their files."""
    old = [p for p in (ROOT / "metrics" / "runs").glob("*.json") if len(p.stem.split("-")) == 3]
    tables = readme_tables("Single seed, recipe")
    if not old:
        assert not tables, "README shows single-seed tables whose files are gone"
        return
    shown = {(recipe, r["family"], int(r["z"])): r for recipe, rows in tables.items() for r in rows}
    for path in old:
        m = json.loads(path.read_text())
        row = shown.pop((m["recipe"], m["family"], m["z"]), None)
        assert row is not None, f"README: no row for {path.stem}"
        for col, key in {"−ELBO": "total", "recon": "recon", "KL": "kl", "IS-NLL": "nll"}.items():
            assert row[col] == f"{m[key]:.2f}", f"README: {path.stem} {col} is {row[col]}, metrics say {m[key]:.2f}"
        assert row["active units"] == f"{m['active_units']}/{m['z']}", path.stem
        assert (row["collapsed"] != "") == m["collapsed"], path.stem
    assert not shown, f"README shows runs with no committed metrics: {sorted(shown)}"
