"""The README's result tables are the committed metrics, not a stale copy of them."""
import json
import math
import re
from pathlib import Path

import pytest


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


def shows(text: str, value: float) -> bool:
    """`text` is `value` as the report prints it. The metrics files hold 4 decimals and the report rounds
    the full-precision mean to 2, so 172.24497 is shown as 172.24 while the file says 172.245."""
    shown = float(text)
    if abs(value) >= 1e6:  # 3 significant digits
        return math.isclose(shown, value, rel_tol=5e-3)
    return abs(shown - value) <= 0.005 + 5e-5


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
        mean, std = row["−ELBO"].split(" ± ")
        assert shows(mean, m["total"]) and shows(std, m["total_std"]), f"README: {path.stem} −ELBO {row['−ELBO']}"
        for col, key in (("reconstruction", "recon"), ("KL", "kl"), ("IW bound", "iw_bound")):
            assert shows(row[col].split(" ± ")[0], m[key]), f"README: {path.stem} {col} {row[col]}"
        for col in ("collapsed", "diverged"):  # "0/3", or "⚠ 1/3: why"
            assert row[col].removeprefix("⚠ ").startswith(f"{m[col]}/{m['seeds']}"), f"README: {path.stem} {col}"
    assert not shown, f"README shows cells with no committed metrics: {sorted(shown)}"


def section(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]


def test_what_the_comparison_shows_quotes_committed_numbers():
    """Every mean ± std in that section is a committed cell's, and every other figure of −ELBO size
    (two decimals, over 100 nats) a committed run's or cell's."""
    comparison = json.loads((ROOT / "metrics" / "comparison.json").read_text())
    pairs, values = [], []
    for cells in comparison.values():
        for cell in cells.values():
            for col in cell.values():
                if isinstance(col, dict) and "mean" in col:
                    pairs.append((col["mean"], col["std"]))
                    values += [col["mean"], *col["per_seed"].values()]
    if not pairs:
        pytest.skip("no committed 3-seed results yet")
    text = section("What the comparison shows")
    quoted = re.findall(r"(\d+\.\d\d) ±\s+(\d+\.\d\d)", text)
    assert quoted, "no mean ± std in the section"
    for mean, std in quoted:
        assert any(shows(mean, m) and shows(std, s) for m, s in pairs if s is not None), f"{mean} ± {std}"
    lone = re.sub(r"\d+\.\d\d ±\s+\d+\.\d\d", "", text)
    for figure in re.findall(r"(?<![\d.])(\d{3}\.\d\d)(?![\d.])", lone):
        assert any(shows(figure, v) for v in values if v is not None), f"README: {figure} is no committed figure"
