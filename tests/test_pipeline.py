"""End to end: the real `dvc repro` over the whole matrix, at smoke size, in a scratch copy."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from ruamel.yaml import YAML

from vae.config import load_params, run_name, runs
from vae.data import MIRROR_ENV

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
# Outputs of a real run that may be committed; the scratch copy must rebuild them.
RESULTS = ("dvc.lock", "metrics/", "plots/")
PARAMS = load_params(ROOT / "params.yaml")
RUNS = [run_name(*r) for r in runs(PARAMS)]


def sh(*cmd, cwd, env=None):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout


def make_project(proj: Path, mirror: str, overrides: dict) -> dict:
    """Copy the project's tracked files into `proj`, make it a git + DVC repo, override params.

    Returns the environment to run dvc in."""
    files = sh("git", "ls-files", "-co", "--exclude-standard", cwd=ROOT).splitlines()
    for f in files:
        if f.startswith(RESULTS) or not (ROOT / f).is_file():
            continue
        (proj / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, proj / f)
    shutil.rmtree(proj / ".dvc", ignore_errors=True)
    sh("git", "init", "-q", cwd=proj)
    sh(DVC, "init", "-q", cwd=proj)
    shutil.copytree(ROOT / ".dvc" / "plots", proj / ".dvc" / "plots", dirs_exist_ok=True)

    yaml = YAML()
    params = yaml.load((proj / "params.yaml").read_text())
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        d = params
        for k in parents:
            d = d[k]
        d[last] = value
    with (proj / "params.yaml").open("w") as f:
        yaml.dump(params, f)
    return {**os.environ, MIRROR_ENV: mirror, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, mnist_mirror):
    proj = tmp_path_factory.mktemp("project")
    env = make_project(proj, mnist_mirror, {"train.epochs": 1, "data.train_subset": 512, "plot.grid": 4,
                                                  "eval.nll_samples": 20, "eval.nll_images": 200})
    out = sh(DVC, "repro", cwd=proj, env=env)
    return proj, env, out


def test_stage_list_is_the_whole_matrix(project):
    proj, env, _ = project
    names = [line.split()[0] for line in sh(DVC, "stage", "list", cwd=proj, env=env).splitlines()]
    assert len(RUNS) == 16 and RUNS[0] == "study-simple_mlp-1" and RUNS[-1] == "tuned-residual-2"
    assert names == ["download", *[f"{s}@{r}" for s in ("train", "evaluate", "plot") for r in RUNS], "compare"]


def test_every_run_has_finite_positive_metrics(project):
    proj, _, _ = project
    files = sorted((proj / "metrics" / "runs").glob("*.json"))
    assert [f.stem for f in files] == sorted(RUNS)
    for f in files:
        m = json.loads(f.read_text())
        assert m["units"] == "nats per image" and m["test_images"] == 10000
        assert all(math.isfinite(m[t]) for t in ("total", "recon", "kl"))
        assert m["total"] > 0 and m["recon"] > 0 and m["kl"] >= 0
        assert math.isclose(m["total"], m["recon"] + m["kl"], abs_tol=1e-3)
        assert math.isfinite(m["nll"]) and m["nll"] > 0 and m["nll_samples"] == 20 and m["nll_images"] == 200
        assert 0 <= m["active_units"] <= m["z"] and len(m["kl_per_dim"]) == m["z"]
        assert m["mutual_info"] > -0.1 and m["collapsed"] == bool(m["collapse_reasons"])
        assert m["study_last_batch"]["images"] == 16


def test_comparison_has_a_table_per_recipe_with_bold_best(project):
    proj, _, out = project
    csv = pd.read_csv(proj / "plots" / "comparison.csv")
    assert csv["run"].tolist() == RUNS and set(csv.columns) >= {"recipe", "total", "recon", "kl"}
    md = (proj / "metrics" / "comparison.md").read_text()
    assert "nats per image" in md and "IS-NLL" in md and "side by side" in md
    per_recipe = len(PARAMS["families"]) * len(PARAMS["latent_dims"])
    for recipe in PARAMS["recipes"]:
        section = md.split(f"## Recipe `{recipe}`")[1].split("## ")[0]
        assert len([line for line in section.splitlines() if line.startswith("|")]) == 2 + per_recipe
        best = csv[csv["recipe"] == recipe]["total"].round(2).min()
        assert f"**{best:.2f}**" in section
    assert (proj / "plots" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    comparison = json.loads((proj / "metrics" / "comparison.json").read_text())
    assert list(comparison) == PARAMS["recipes"] and all(len(v) == per_recipe for v in comparison.values())
    assert "Running stage 'compare'" in out


def test_every_plot_and_log_exists(project):
    proj, _, _ = project
    for run in pd.read_csv(proj / "plots" / "comparison.csv")["run"]:
        for png in ("manifold", "latent", "reconstructions", "samples", "loss_curves"):
            p = proj / "plots" / run / f"{png}.png"
            assert p.stat().st_size > 0 and p.read_bytes()[:4] == b"\x89PNG"
        assert any((proj / "logs" / run).glob("events.out.tfevents.*"))
        assert (proj / "models" / f"{run}.pt").exists()
        assert len(pd.read_csv(proj / "metrics" / "history" / f"{run}.csv")) == 1


def test_dvc_sees_the_pipeline_as_up_to_date_and_shows_metrics_and_plots(project):
    proj, env, _ = project
    assert "up to date" in sh(DVC, "status", cwd=proj, env=env)
    metrics = json.loads(sh(DVC, "metrics", "show", "--json", cwd=proj, env=env))
    workspace = next(iter(metrics.values()))  # keyed "" or "workspace", by DVC version
    assert list(workspace["data"]["metrics/comparison.json"]["data"]) == PARAMS["recipes"]
    r = subprocess.run([DVC, "plots", "show", "-o", "plots_html"], cwd=proj, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "failed" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    html = (proj / "plots_html" / "index.html").read_text()
    assert "Test negative ELBO per epoch" in html and "manifold.png" in html and "latent.png" in html
    assert "Test KL against reconstruction over training" in html and "comparison.png" in html
    manifest = json.loads((proj / "data" / "mnist" / "manifest.json").read_text())
    assert manifest["files"]["train_images"]["source"] == "local mirror"
