"""The README and docs/ pages: their result tables are the committed metrics, not a stale copy of
them, and every relative link between them resolves."""

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pages(root: Path = ROOT) -> list[Path]:
    """The README and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def readme_tables(heading: str, path: Path) -> list[tuple[str, list[str], list[dict[str, str]]]]:
    """(recipe, header, rows) of each table under a `## HEADING `NAME`` heading (any level) of one page."""
    tables, recipe, header = [], None, None
    for line in path.read_text().splitlines():
        if m := re.match(rf"#+ {heading} `(\w+)`", line):
            recipe, header = m[1], None
        elif line.startswith("#"):
            recipe = None
        elif recipe and line.startswith("|"):
            cells = [c.strip().strip("*").rstrip(" †") for c in line.strip("|").split("|")]
            if header is None:
                header = cells
                tables.append((recipe, header, []))
            elif not set(cells[0]) <= set("-: "):
                tables[-1][2].append(dict(zip(header, cells)))
        elif recipe and line.strip() and header is not None:
            header = None  # prose after a table ends it: another table under the same heading starts afresh
    return tables


def shows(text: str, value: float) -> bool:
    """`text` is `value` as the report prints it. The metrics files hold 4 decimals and the report rounds
    the full-precision mean to 2, so 172.24497 is shown as 172.24 while the file says 172.245."""
    shown = float(text)
    if abs(value) >= 1e6:  # 3 significant digits
        return math.isclose(shown, value, rel_tol=5e-3)
    return abs(shown - value) <= 0.005 + 5e-5


def columns(binarized: bool) -> dict[str, str]:
    """The README's checked column headers and the cell-file key each shows; a binarized cell's IW bound is
    headed for what it is there (vae/metrics.py), as compare heads it."""
    from vae.metrics import METRICS

    iw = METRICS["iw_bound"]
    return {"reconstruction": "recon", "KL": "kl", ((binarized and iw.binarized) or iw.header): "iw_bound"}


def check_recipe_tables(root: Path) -> int:
    """Every `Recipe `NAME`` table of root's README and docs/ pages against root's metrics/cells: one row per
    committed cell of its recipe, with the committed figures in each checked column it has; every committed
    cell has a row somewhere with all of them. Returns the rows checked."""
    committed = {
        tuple(p.stem.split("-")): json.loads(p.read_text()) for p in (root / "metrics" / "cells").glob("*.json")
    }
    complete, seen = set(), 0
    for page in pages(root):
        where = page.relative_to(root)
        for recipe, header, rows in readme_tables("Recipe", page):
            assert "−ELBO" in header, f"{where}: a `Recipe `{recipe}`` table without a −ELBO column"
            lacking = {c for c in committed if c[0] == recipe} - {(recipe, r["family"], r["z"]) for r in rows}
            assert not lacking, f"{where}: `Recipe `{recipe}`` lacks {sorted('-'.join(c) for c in lacking)}"
            for row in rows:
                seen += 1
                name = f"{recipe}-{row['family']}-{row['z']}"
                m = committed.get((recipe, row["family"], row["z"]))
                assert m is not None, f"{where} shows {name}, which has no committed metrics"
                mean, std = row["−ELBO"].split(" ± ")
                assert shows(mean, m["total"]) and shows(std, m["total_std"]), f"{where}: {name} −ELBO {row['−ELBO']}"
                checked = columns("iw_bound_se" in m)  # only a binarized cell's file has the bound's SE
                for col, key in checked.items():
                    if col in row:
                        assert shows(row[col].split(" ± ")[0], m[key]), f"{where}: {name} {col} {row[col]}"
                for col in ("collapsed", "diverged"):  # "0/3", or "⚠ 1/3: why"
                    if col in row:
                        assert row[col].removeprefix("⚠ ").startswith(f"{m[col]}/{m['seeds']}"), (
                            f"{where}: {name} {col}"
                        )
                if all(col in row for col in ("−ELBO", *checked, "collapsed", "diverged")):
                    complete.add((recipe, row["family"], row["z"]))
    missing = sorted("-".join(c) for c in set(committed) - complete)
    assert not missing, f"committed cells shown nowhere with every checked column: {missing}"
    return seen


def test_readme_shows_every_committed_cell_as_mean_and_std_over_seeds():
    if not any((ROOT / "metrics" / "cells").glob("*.json")):
        pytest.skip("no committed 3-seed results yet (metrics/cells)")
    assert check_recipe_tables(ROOT), "no `Recipe `NAME`` table in the README or docs/"


def test_a_binarized_table_is_checked_under_its_nll_header(tmp_path):
    """A binarized cell's bound is headed "NLL upper bound (IW)" in its recipe's table: the check reads
    that column, and a wrong figure in it fails, as in a grey-level table."""
    cell = {
        "total": 134.3703,
        "recon": 127.25,
        "kl": 7.12,
        "iw_bound": 132.15,
        "iw_bound_se": 0.46,
        "mutual_info": 5.9,
        "total_std": 0.4313,
        "seeds": 3,
        "collapsed": 0,
        "diverged": 0,
    }
    (tmp_path / "metrics" / "cells").mkdir(parents=True)
    (tmp_path / "metrics" / "cells" / "binarized-deep_mlp-2.json").write_text(json.dumps(cell))
    (tmp_path / "docs").mkdir()

    def readme(bound: str, header: str = "NLL upper bound (IW)") -> None:
        (tmp_path / "README.md").write_text(
            "### Recipe `binarized`\n\n"
            f"| family | z | −ELBO | reconstruction | KL | {header} | collapsed | diverged |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
            f"| deep_mlp | 2 | **134.37 ± 0.43** | 127.25 ± 0.10 | 7.12 ± 0.01 | {bound} | 0/3 | 0/3 |\n"
        )

    readme("132.15 ± 0.41")
    assert check_recipe_tables(tmp_path) == 1
    readme("132.45 ± 0.41")
    with pytest.raises(AssertionError, match="NLL upper bound"):
        check_recipe_tables(tmp_path)
    readme("132.15 ± 0.41", header="IW bound")  # the grey-level header: the cell is shown without its bound
    with pytest.raises(AssertionError, match="shown nowhere with every checked column"):
        check_recipe_tables(tmp_path)


def test_readme_headline_is_the_tuned_table():
    assert any(recipe == "tuned" and rows for recipe, _, rows in readme_tables("Recipe", ROOT / "README.md")), (
        "README: no `### Recipe `tuned`` table"
    )


def section(heading: str) -> str:
    """The text under `#... HEADING` up to the next heading, from whichever page has it."""
    found = []
    for page in pages():
        text = page.read_text()
        if m := re.search(rf"^#+ {re.escape(heading)}\n", text, re.M):
            found.append(text[m.end() :].split("\n#", 1)[0])
    assert len(found) == 1, f"{len(found)} sections called {heading!r} in README.md and docs/*.md"
    return found[0]


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
    from vae.cells import PUBLISHED  # a published likelihood may stand beside ours

    values += [v for figures in PUBLISHED.values() for v in figures.values()]
    lone = re.sub(r"\d+\.\d\d ±\s+\d+\.\d\d", "", text)
    for figure in re.findall(r"(?<![\d.])(\d{3}\.\d\d)(?![\d.])", lone):
        assert any(shows(figure, v) for v in values if v is not None), f"{figure} is no committed figure"


def test_readme_is_read_in_five_minutes():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= 200, f"README.md has {lines} lines; move detail to a page under docs/ (issue #24)"


# --- links ---------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
# [text](target) and ![alt](target); the text may hold one level of brackets and span lines.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
# A code span: a run of backticks up to the same run (`` a `b` c `` included).
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)


def prose(text: str) -> str:
    """The page without fenced code blocks and code spans, where `[x](y)` is no link."""
    kept, fenced = [], None
    for line in text.splitlines():
        if m := FENCE.match(line):
            fenced = None if fenced == m[1] else (fenced or m[1])
            continue
        if not fenced:
            kept.append(line)
    return CODE_SPAN.sub("", "\n".join(kept))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links and code as their text), lowercase, punctuation
    other than '-' and '_' dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor on a page; a repeated one gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    fenced = None
    for line in path.read_text().splitlines():
        if m := FENCE.match(line):
            fenced = None if fenced == m[1] else (fenced or m[1])
            continue
        if fenced or not (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            continue
        s = slug(m[1])
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def test_slug_follows_github():
    assert slug("Recipe `study`") == "recipe-study"
    assert slug("Data sets: MNIST and Fashion-MNIST") == "data-sets-mnist-and-fashion-mnist"
    assert slug("Results come home through DVC's run-cache") == "results-come-home-through-dvcs-run-cache"
    assert slug("A SLURM cluster with dask-jobqueue") == "a-slurm-cluster-with-dask-jobqueue"
    assert slug("What the −ELBO and KL_per_dim mean") == "what-the-elbo-and-kl_per_dim-mean"


def test_every_relative_link_resolves():
    """Every relative link and picture in README.md and docs/*.md names an existing file, and every
    `#anchor` into a markdown page an existing heading of it."""
    broken, checked = [], 0
    for page in pages():
        where = page.relative_to(ROOT)
        for target in LINK.findall(prose(page.read_text())):
            if not target or re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.is_relative_to(ROOT):
                broken.append(f"{where}: {target}: outside the repository")
            elif not dest.exists():
                broken.append(f"{where}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where}: {target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert checked, "no relative links found"
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_metric_column_is_explained():
    """Every key the evaluate stage writes (vae/metrics.py) has a row in docs/results.md's
    `What each run reports` table, so a new column cannot go undocumented."""
    from vae.metrics import METRICS

    text = section("What each run reports")
    documented = {key for cell in re.findall(r"^\| (.*?) \|", text, re.M) for key in re.findall(r"`(\w+)`", cell)}
    missing = sorted(set(METRICS) - documented)
    assert not missing, f"docs/results.md#what-each-run-reports does not explain {missing}"


# --- binarized MNIST beside published likelihoods ----------------------------------


def flat(text: str) -> str:
    """Markdown prose with its line wrapping undone, so a sentence wrapped anywhere is found."""
    return re.sub(r"\s+", " ", text.replace("*", ""))


def check_verdicts(root: Path) -> int:
    """The README states every verdict the comparison draws against a published likelihood (metrics/
    comparison.md's "- Against the ..." lines, word for word), and every published figure it quotes is the
    one compare uses. Returns the verdicts checked."""
    from vae.cells import PUBLISHED

    verdicts = re.findall(r"^- (Against the .*)$", (root / "metrics" / "comparison.md").read_text(), re.M)
    readme = flat((root / "README.md").read_text())
    missing = [v for v in verdicts if flat(v) not in readme]
    assert not missing, f"README.md does not state compare's verdicts: {missing}"
    published = {name.split()[-1]: v for figures in PUBLISHED.values() for name, v in figures.items()}
    for page in pages(root):
        for model, figure in re.findall(r"(Gaussian VAE|S-VAE)(?:'s)? (\d+\.\d\d)", flat(page.read_text())):
            assert float(figure) == published[model.split()[-1]], f"{page.name}: {model} {figure}"
    return len(verdicts)


def test_readme_states_the_comparisons_verdicts_against_published_likelihoods():
    if not check_verdicts(ROOT):
        pytest.skip("no committed binarized cells yet: metrics/comparison.md draws no verdict")


def test_a_verdict_the_readme_leaves_out_or_rewords_fails(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "docs").mkdir()
    verdict = (
        "Against the Gaussian VAE (135.73 nats): ahead: `binarized` deep_mlp z=2; level: none; "
        "behind: `binarized` simple_mlp z=2."
    )
    (tmp_path / "metrics" / "comparison.md").write_text(f"## Binarized MNIST\n\n- {verdict}\n")
    (tmp_path / "README.md").write_text(
        "Beside Davidson et al. (Gaussian VAE 135.73):\n\n- " + verdict.replace("; ", ";\n  ") + "\n"
    )
    assert check_verdicts(tmp_path) == 1  # wrapped over lines, still the same words
    (tmp_path / "README.md").write_text("- " + verdict.replace("level: none", "level: `binarized` conv z=2"))
    with pytest.raises(AssertionError, match="does not state compare's verdicts"):
        check_verdicts(tmp_path)
    (tmp_path / "README.md").write_text(f"- {verdict}\n\nThe Gaussian VAE's 135.37 nats.")
    with pytest.raises(AssertionError, match="Gaussian VAE 135.37"):
        check_verdicts(tmp_path)
