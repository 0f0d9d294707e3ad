"""Failures under the real `dvc repro`, at smoke size: a bad mirror, a missing GPU, a full disk.
After each, every earlier output is in place, or restored by the one command the error names."""

import os
import subprocess
import sys

import pytest

from tests.smoke import DVC, ROOT, SMOKE, commit, make_project, set_params, sh
from tests.test_download import serve, silent_mirror  # noqa: F401 (fixtures)

RUN = "study-simple_mlp-2-0"
# Public mirrors unreachable whatever this machine's network: requests goes through a dead proxy.
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, data_mirror):
    proj = tmp_path_factory.mktemp("failures")
    env = make_project(
        proj, data_mirror, {**SMOKE, "recipes": ["study"], "families": ["simple_mlp"], "latent_dims": [2], "seeds": [0]}
    )
    sh(DVC, "repro", cwd=proj, env=env)
    commit(proj)
    return proj, env


def files(proj):
    """Every output in the workspace, by path: what a failure must not lose."""
    return {
        str(p.relative_to(proj)): p.read_bytes()
        for d in ("data", "models", "metrics", "plots", "checks")
        for p in sorted((proj / d).rglob("*"))
        if p.is_file()
    }


def intact(proj, env, before):
    assert sh("git", "status", "--porcelain", cwd=proj) == ""
    assert files(proj) == before
    assert "up to date" in sh(DVC, "status", cwd=proj, env=env)


@pytest.mark.parametrize("bad", ["html", "404", "500", "hang"])
def test_a_failed_download_under_dvc_repro_keeps_the_data(project, serve, silent_mirror, bad):  # noqa: F811
    proj, env = project
    before = files(proj)
    answers = {
        "html": (200, b"<!DOCTYPE html><html><body>Sign in</body></html>"),
        "404": (404, b"Not Found"),
        "500": (500, b"oops"),
    }
    url = silent_mirror if bad == "hang" else serve(lambda path: answers[bad])[0]
    set_params(proj, {"data.retries": 1, "data.read_timeout_s": 1, "data.connect_timeout_s": 1})
    try:
        r = subprocess.run(
            [DVC, "repro", "-f", "-s", "download"],
            cwd=proj,
            capture_output=True,
            text=True,
            env={**env, **OFFLINE, "VAE_DATA_MIRROR": url},
            timeout=300,
        )
    finally:
        sh("git", "checkout", "params.yaml", cwd=proj)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "could not fetch" in r.stdout + r.stderr
    intact(proj, env, before)


def test_cuda_without_cuda_stops_at_check_before_any_output_is_removed(project):
    proj, env = project
    before = files(proj)
    set_params(proj, {"train.device": "cuda"})
    try:
        r = subprocess.run([DVC, "repro"], cwd=proj, env=env, capture_output=True, text=True)
    finally:
        sh("git", "checkout", "params.yaml", cwd=proj)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    ours = [line for line in r.stderr.splitlines() if line.startswith("check:")]
    assert len(ours) == 1 and "cuda" in ours[0].lower(), r.stderr
    assert "Running stage 'train@" not in r.stdout
    intact(proj, env, before)


def test_a_full_disk_in_training_is_one_line_and_dvc_checkout_restores_the_outputs(project):
    proj, env = project
    before = files(proj)
    # 4000 blocks: the data load fits, the TensorBoard log and the model do not.
    r = subprocess.run(
        ["bash", "-c", f"ulimit -f 400; {DVC} repro -f -s train@{RUN}"],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    ours = [line for line in r.stderr.splitlines() if line.startswith("train:")]
    assert len(ours) == 1 and "free" in ours[0] and "dvc checkout" in ours[0], r.stderr
    sh(DVC, "checkout", f"train@{RUN}", cwd=proj, env=env)
    intact(proj, env, before)


def test_a_python_without_the_requirements_is_one_line():
    """DVC runs stages with the `python` on PATH: outside the venv, one line says what to do."""
    base = getattr(sys, "_base_executable", sys.executable)
    if subprocess.run([base, "-c", "import torch, ruamel.yaml"], capture_output=True).returncode == 0:
        pytest.skip(f"{base} has the requirements: no Python without them here")
    r = subprocess.run(
        [base, "-m", "stages.check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("stages: ") and "venv" in r.stderr and len(r.stderr.strip().splitlines()) == 1
