"""The README's result tables are the committed metrics, not a stale copy of them."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"−ELBO": "total", "recon": "recon", "KL": "kl", "IS-NLL": "nll"}


def readme_tables() -> dict[str, list[dict[str, str]]]:
    """Rows of each table under a `### Recipe `NAME`` heading, keyed by recipe."""
    tables, recipe, header = {}, None, None
    for line in (ROOT / "README.md").read_text().splitlines():
        if m := re.match(r"### Recipe `(\w+)`", line):
            recipe, header = m[1], None
            tables[recipe] = []
        elif line.startswith("#"):
            recipe = None
        elif recipe and line.startswith("|"):
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(cells[0]) <= set("-: "):
                tables[recipe].append(dict(zip(header, cells)))
    return tables


def test_readme_shows_every_committed_run_with_its_metrics():
    tables = readme_tables()
    runs = sorted((ROOT / "metrics" / "runs").glob("*.json"))
    if not runs:
        pytest.skip("no committed metrics")
    assert tables, "README has no '### Recipe `NAME`' result tables"
    shown = {(recipe, r["family"], int(r["z"])): r for recipe, rows in tables.items() for r in rows}
    for path in runs:
        m = json.loads(path.read_text())
        row = shown.pop((m["recipe"], m["family"], m["z"]), None)
        assert row is not None, f"README: no row for {path.stem} under ### Recipe `{m['recipe']}`"
        for col, key in COLUMNS.items():
            assert row[col] == f"{m[key]:.2f}", f"README: {path.stem} {col} is {row[col]}, metrics say {m[key]:.2f}"
        assert row["active units"] == f"{m['active_units']}/{m['z']}", path.stem
        assert (row["collapsed"] != "") == m["collapsed"], path.stem
    assert not shown, f"README shows runs with no committed metrics: {sorted(shown)}"
