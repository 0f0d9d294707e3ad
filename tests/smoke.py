"""Scratch copies of the project at smoke size, for the end-to-end tests (real DVC, real MNIST in CI)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from vae.download import MIRROR_ENV

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
# Outputs of a real run that may be committed; the scratch copy must rebuild them.
RESULTS = ("dvc.lock", "metrics/", "plots/", "dvc-remote/")
# Smoke size: one epoch on 512 images, two seeds per cell (so the aggregate has a spread).
SMOKE = {
    "train.epochs": 1,
    "data.train_subset": 512,
    "plot.grid": 4,
    "eval.iw_samples": 20,
    "eval.literature_iw_samples": 10,
    "eval.iw_images": 200,
    "eval.nll_images": 200,
    "seeds": [0, 1],
    # No subset recipe unless a test asks for one (the smoke matrix does).
    "subset_recipes": [],
}
# The end-to-end matrix: a grey-level and the binarized recipe (`tuned` is `binarized` without the
# binarization), the simplest and the most complex family (the other two differ only in the model
# registry, which the unit tests cover), z=2: 8 runs; and the subset recipe `iwae` on the simple MLP (its own
# stage group, train_subset@...): 2 more. (z=1's stages, its 1-D manifold among them, run end to end in
# test_pipeline's Fashion-MNIST test.)
MATRIX = {
    **SMOKE,
    "recipes": ["study", "binarized"],
    "families": ["simple_mlp", "residual"],
    "subset_recipes": ["iwae"],
    "subset_families": ["simple_mlp"],
    "latent_dims": [2],
}


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
    sh(DVC, "init", "-q", cwd=proj, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    # As the project's own .dvc/config (its remote aside): with analytics on, every DVC command starts
    # a second Python process to report it (about 0.5 CPU-s each, hundreds of commands in the suite).
    (proj / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    shutil.copytree(ROOT / ".dvc" / "plots", proj / ".dvc" / "plots", dirs_exist_ok=True)

    set_params(proj, overrides)
    # One thread per stage, as the study's workers: outputs compare byte for byte across the tests.
    return {**os.environ, MIRROR_ENV: mirror, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def set_params(proj: Path, overrides: dict) -> None:
    """Set dotted keys of proj/params.yaml, keeping its comments and layout."""
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


def commit(proj: Path, message: str = "results") -> None:
    sh("git", "add", "-A", cwd=proj)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message, "--allow-empty", cwd=proj)


def outs(proj: Path) -> dict:
    """Every output hash in dvc.lock, by stage and path."""
    lock = YAML(typ="safe").load((proj / "dvc.lock").read_text())["stages"]
    return {(name, o["path"]): o["md5"] for name, st in lock.items() for o in st.get("outs", [])}


def study_env(env: dict, tmp: Path) -> dict:
    # Its own default remote and scratch: nothing shared with the user's or another test's.
    return {**env, "XDG_CACHE_HOME": str(tmp / "xdg"), "VAE_STUDY_SCRATCH": str(tmp / "scratch")}


def run_study(proj: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/study.py", "--workers", "2", "--threads", "1", *args],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
