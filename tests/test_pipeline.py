"""End to end: the whole pipeline at smoke size in a scratch copy, computed by the study command
(Dask workers, DVC's run-cache), then checked as a user would with `dvc status`, metrics and plots."""

import json
import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

from tests.smoke import DVC, MATRIX, ROOT, SMOKE, make_project, outs, set_params, sh
from vae.config import cell_name, load_params, run_name, runs
from vae.params import pairs, stage

PARAMS = load_params(ROOT / "params.yaml")
MATRIX_KEYS = ("recipes", "families", "subset_recipes", "subset_families", "latent_dims", "seeds")
SMOKE_PARAMS = {**PARAMS, **{k: MATRIX[k] for k in MATRIX_KEYS}}
RUNS = [run_name(*r) for r in runs(SMOKE_PARAMS)]
CELLS = list(dict.fromkeys(cell_name(*r[:3]) for r in runs(SMOKE_PARAMS)))


@pytest.fixture(scope="module")
def project(smoke_study):
    _, proj, env, out = smoke_study
    return proj, env, out


def test_the_matrix_is_102_runs_in_dvc_yaml_order():
    every = [run_name(*r) for r in runs(PARAMS)]
    assert len(every) == 90 + 12 and every[0] == "study-simple_mlp-1-0" and every[89] == "binarized-davidson_mlp-2-2"
    assert every[-1] == "iwae-davidson_mlp-2-2"


def test_stage_list_is_the_whole_matrix(project):
    """Every run's stages, the subset recipe's in their own group after the full matrix's."""
    proj, env, _ = project
    names = [line.split()[0] for line in sh(DVC, "stage", "list", cwd=proj, env=env).splitlines()]
    subset = [r for r in runs(SMOKE_PARAMS) if r[0] in MATRIX["subset_recipes"]]
    assert subset
    full = [r for r in runs(SMOKE_PARAMS) if r not in subset]
    cells = lambda rs: list(dict.fromkeys(r[:3] for r in rs))  # noqa: E731
    assert names == [
        "check",
        "download",
        *[
            stage(SMOKE_PARAMS, s, r[0], run_name(*r))
            for s in ("train", "evaluate")
            for rs in (full, subset)
            for r in rs
        ],
        *[stage(SMOKE_PARAMS, "plot", c[0], cell_name(*c)) for rs in (full, subset) for c in cells(rs)],
        "compare",
    ]
    assert "train_subset@iwae-simple_mlp-2-0" in names and "plot_subset@iwae-simple_mlp-2" in names


def test_every_run_has_finite_positive_metrics(project):
    proj, _, _ = project
    files = sorted((proj / "metrics" / "runs").glob("*.json"))
    assert len(files) == 2 * len(CELLS)
    for f in files:
        m, d = json.loads(f.read_text()), json.loads((proj / "metrics" / "details" / f.name).read_text())
        assert d["units"] == "nats per image" and d["test_images"] == 10000 and d["dataset"] == "mnist"
        # The DVC metric is one flat row: numbers and flags (null where a diverged run's figure is not finite).
        assert all(isinstance(v, (int, float)) or (v is None and m["diverged"]) for v in m.values())
        if m["diverged"]:  # recorded, counted by compare: its figures are of a blown-up model
            continue
        assert all(math.isfinite(m[t]) for t in ("total", "recon", "kl"))
        assert m["total"] > 0 and m["recon"] > 0 and m["kl"] >= 0
        assert math.isclose(m["total"], m["recon"] + m["kl"], rel_tol=1e-6, abs_tol=1e-3)  # float32 sums
        assert math.isfinite(m["iw_bound"]) and m["iw_bound"] > 0 and d["iw_samples"] == 20 and d["iw_images"] == 200
        assert 0 <= m["active_units"] <= d["z"] and len(d["kl_per_dim"]) == d["z"]
        assert m["mutual_info"] > -0.1 and m["collapsed"] == bool(d["collapse_reasons"])
        if f.stem.startswith(("binarized-", "iwae-")):  # scored on the fixed test binarization, in no study units
            assert d["binarize"] == "dynamic" and m["iw_bound_se"] > 0 and "study_last_batch" not in d
        else:
            assert d["study_last_batch"]["images"] == 16


def test_comparison_aggregates_seeds_per_cell_with_a_table_per_recipe(project):
    proj, _, out = project
    csv = pd.read_csv(proj / "plots" / "comparison.csv")
    # A chart label may add "(k/n diverged, not drawn)": at 1 epoch on 512 images lr 0.01 can blow up.
    assert [run.split(" (")[0] for run in csv["run"]] == CELLS and (csv["seeds"] == 2).all()
    assert set(csv.columns) >= {"total", "total_std"}
    md = (proj / "metrics" / "comparison.md").read_text()
    assert "nats per image" in md and "IW bound" in md and "## Next to the study's table" in md and " ± " in md
    recipes = dict.fromkeys(r for r, _ in pairs(SMOKE_PARAMS))
    per_recipe = {r: sum(q == r for q, _ in pairs(SMOKE_PARAMS)) * len(SMOKE_PARAMS["latent_dims"]) for r in recipes}
    for recipe in recipes:
        section = md.split(f"## Recipe `{recipe}`")[1].split("## ")[0]
        assert len([line for line in section.splitlines() if line.startswith("|")]) == 2 + per_recipe[recipe]
    assert (proj / "plots" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    comparison = json.loads((proj / "metrics" / "comparison.json").read_text())
    assert list(comparison) == [*recipes] and all(len(v) == per_recipe[r] for r, v in comparison.items())
    cell = comparison["binarized"]["residual-2"]["total"]
    runs = [
        json.loads((proj / "metrics" / "runs" / f"binarized-residual-2-{s}.json").read_text())["total"] for s in (0, 1)
    ]
    assert cell["per_seed"] == {"0": runs[0], "1": runs[1]}
    assert cell["mean"] == pytest.approx(sum(runs) / 2, abs=1e-4) and cell["min"] == min(runs)
    assert sorted(p.stem for p in (proj / "metrics" / "cells").glob("*.json")) == sorted(CELLS)
    assert "Running stage 'compare'" in out


def test_every_plot_and_log_exists(project):
    proj, _, _ = project
    for cell in CELLS:
        for png in ("manifold", "latent", "reconstructions", "samples", "loss_curves"):
            p = proj / "plots" / cell / f"{png}.png"
            assert p.stat().st_size > 0 and p.read_bytes()[:4] == b"\x89PNG"
    for run in RUNS:
        assert any((proj / "logs" / run).glob("events.out.tfevents.*"))
        assert (proj / "models" / f"{run}.pt").exists()
        assert not (proj / "checkpoints" / f"{run}.pt").exists()  # scratch, cleared when the run completes
        assert len(pd.read_csv(proj / "metrics" / "history" / f"{run}.csv")) == 1


def test_dvc_sees_the_pipeline_as_up_to_date_and_shows_metrics_and_plots(project):
    proj, env, _ = project
    # Like the project's own config: no DVC command starts a second process to report analytics.
    for config in (ROOT / ".dvc" / "config", proj / ".dvc" / "config"):
        assert "[core]\n    analytics = false\n" in config.read_text(), config
    assert "up to date" in sh(DVC, "status", cwd=proj, env=env)
    # Scratch is outside the DVC graph: losing it (a fresh clone, a cleanup) makes nothing stale.
    # (Moved aside, not deleted: other tests read this shared project's study logs.)
    (proj / "logs").rename(proj.parent / "logs.aside")
    shutil.rmtree(proj / "checkpoints", ignore_errors=True)
    try:
        assert "up to date" in sh(DVC, "status", cwd=proj, env=env)
    finally:
        (proj.parent / "logs.aside").rename(proj / "logs")
    metrics = json.loads(sh(DVC, "metrics", "show", "--json", cwd=proj, env=env))
    workspace = next(iter(metrics.values()))  # keyed "" or "workspace", by DVC version
    files = workspace["data"]
    assert len([f for f in files if f.startswith("metrics/runs/")]) == 2 * len(CELLS)
    assert len([f for f in files if f.startswith("metrics/cells/")]) == len(CELLS)
    r = subprocess.run([DVC, "plots", "show", "-o", "plots_html"], cwd=proj, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "failed" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    html = (proj / "plots_html" / "index.html").read_text()
    assert "Test negative ELBO per epoch" in html and "manifold.png" in html and "latent.png" in html
    assert "Test KL against reconstruction over training" in html and "comparison.png" in html
    manifest = json.loads((proj / "data" / "mnist" / "manifest.json").read_text())
    # Nothing machine-specific (where a file came from): data/mnist hashes alike on every machine.
    assert "source" not in manifest["files"]["train_images"] and manifest["title"] == "MNIST"


# Under the real `dvc repro`: a bad value, and a family typo, which also changes dvc.yaml's stage list.
# (Every message of params.yaml's checks: tests/test_config.py, in-process.)
@pytest.mark.parametrize(
    "dotted, value, message",
    [
        ("train.lr", -1, "check: params.yaml: 'train.lr' must be a number > 0, got -1"),
        (
            "families",
            ["simple_mpl"],
            "check: params.yaml: 'families' has unknown family 'simple_mpl' "
            "(did you mean 'simple_mlp'?); known families:",
        ),
    ],
)
def test_a_bad_param_stops_dvc_repro_before_any_output_is_touched(project, dotted, value, message):
    proj, env, _ = project
    sh("git", "add", "-A", cwd=proj)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results", "--allow-empty", cwd=proj)
    before = {p: p.stat().st_mtime_ns for p in (proj / "models").iterdir()}
    good = (proj / "params.yaml").read_text()
    set_params(proj, {dotted: value})
    try:
        r = subprocess.run([DVC, "repro"], cwd=proj, env=env, capture_output=True, text=True)
    finally:
        (proj / "params.yaml").write_text(good)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    ours = [line for line in r.stderr.splitlines() if line.startswith("check:")]
    assert len(ours) == 1 and ours[0].startswith(message), r.stderr
    assert {p: p.stat().st_mtime_ns for p in (proj / "models").iterdir()} == before
    assert sh("git", "status", "--porcelain", cwd=proj) == ""  # metrics, history, plots: all as committed
    assert "up to date" in sh(DVC, "status", cwd=proj, env=env)


def test_one_familys_override_makes_only_that_familys_runs_stale(project):
    """train@ depends on its (recipe, family)'s resolved settings (checks/settings/), not on all of
    `train` and `recipe`: another family's override, or another recipe's, leaves a run up to date."""
    proj, env, _ = project
    good = (proj / "params.yaml").read_text()
    set_params(proj, {"recipe.study": {"families": {"residual": {"lr": 0.002}}}})
    try:
        sh(DVC, "repro", "check", cwd=proj, env=env)
        stale = set(json.loads(sh(DVC, "status", "--json", cwd=proj, env=env)))
    finally:
        (proj / "params.yaml").write_text(good)
        sh(DVC, "repro", "check", cwd=proj, env=env)
    trains = {s for s in stale if s.startswith("train@")}
    assert trains == {f"train@{r}" for r in RUNS if r.startswith("study-residual-")}, sorted(stale)
    assert "up to date" in sh(DVC, "status", cwd=proj, env=env)


def test_fashion_mnist_runs_under_its_own_names(tmp_path, data_mirror):
    env = make_project(
        tmp_path,
        data_mirror,
        {
            **SMOKE,
            "data.dataset": "fashion_mnist",
            "recipes": ["tuned"],
            "families": ["simple_mlp"],
            "latent_dims": [1, 2],
            "seeds": [0],
        },
    )
    sh(DVC, "repro", cwd=tmp_path, env=env)
    manifest = json.loads((tmp_path / "data" / "fashion_mnist" / "manifest.json").read_text())
    assert manifest["dataset"] == "fashion_mnist" and manifest["title"] == "Fashion-MNIST"
    assert not (tmp_path / "data" / "mnist").exists()
    md = (tmp_path / "metrics" / "comparison.md").read_text()
    assert md.startswith("# VAE comparison on Fashion-MNIST") and "MNIST" not in md.replace("Fashion-MNIST", "")
    assert "study" not in md.lower()  # the study's table is of MNIST: not set beside Fashion numbers
    for z in (1, 2):  # z=1 end to end here (the smoke matrix is z=2): its metrics and its 1-D pictures
        d = json.loads((tmp_path / "metrics" / "details" / f"tuned-simple_mlp-{z}-0.json").read_text())
        assert d["dataset"] == "fashion_mnist" and "study_last_batch" not in d and d["z"] == z
        m = json.loads((tmp_path / "metrics" / "runs" / f"tuned-simple_mlp-{z}-0.json").read_text())
        assert len(d["kl_per_dim"]) == z and 0 <= m["active_units"] <= z and m["total"] > 0
        for png in ("manifold", "latent", "reconstructions", "samples", "loss_curves"):
            assert (tmp_path / "plots" / f"tuned-simple_mlp-{z}" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"


TINY = '''"""A user's architecture (docs/architectures.md): an MLP of one narrow hidden layer."""

from torch import nn

from vae.models import N_PIXELS, register


@register("tiny_mlp")
def build(z: int, hidden: int):
    enc = nn.Sequential(nn.Flatten(), nn.Linear(N_PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z))
    dec = nn.Sequential(nn.Linear(z, hidden), nn.ReLU(), nn.Linear(hidden, N_PIXELS))
    return enc, dec
'''


def test_adding_a_family_computes_its_runs_alone(project, tmp_path):
    """docs/architectures.md's recipe on a copy of the computed smoke study: one new file, the family in
    `families` with its sizes under `models`, and `dvc repro` computes that family's runs, its pictures,
    check and compare; every committed run, and the data, stay as they were."""
    proj, env, _ = project
    copy = tmp_path / "proj"
    shutil.copytree(proj, copy, symlinks=True)
    before = outs(copy)
    (copy / "vae" / "families" / "tiny_mlp.py").write_text(TINY)
    set_params(copy, {"families": [*MATRIX["families"], "tiny_mlp"], "models.tiny_mlp": {"hidden": 16}})
    r = subprocess.run([DVC, "repro"], cwd=copy, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ran = set(re.findall(r"Running stage '([^']+)'", r.stdout))
    tiny = [r for r in runs({**SMOKE_PARAMS, "families": ["tiny_mlp"]}) if r[1] == "tiny_mlp"]
    new = {f"{s}@{run_name(*k)}" for s in ("train", "evaluate") for k in tiny}
    new |= {f"plot@{cell_name(*k[:3])}" for k in tiny}
    assert ran == {"check", "compare", *new}, sorted(ran)
    after = outs(copy)
    kept = {k: v for k, v in before.items() if k[0] not in ("check", "compare")}
    assert {k: after[k] for k in kept} == kept  # every earlier run's outputs, and the data, unchanged
    md = (copy / "metrics" / "comparison.md").read_text()
    assert "tiny_mlp" in md and all(f in md for f in MATRIX["families"])
