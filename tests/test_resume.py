"""Kill a training stage for real mid-run: `dvc repro` resumes only when nothing but the interruption
differs, and the result matches an uninterrupted run; after a change of code or params it starts over."""

import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.smoke import DVC, make_project, set_params, sh

RUN = "tuned-deep_mlp-2-0"  # warm-up and the lr schedule must resume too


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, data_mirror):
    """A project whose train@RUN was killed after its first epoch checkpoint; returns (proj, env, a copy of it)."""
    proj = tmp_path_factory.mktemp("resume")
    env = make_project(
        proj,
        data_mirror,
        {
            "recipes": ["tuned"],
            "families": ["deep_mlp"],
            "latent_dims": [2],
            "seeds": [0],
            "train.epochs": 4,
            "data.train_subset": 6000,
        },
    )
    sh(DVC, "repro", "download", cwd=proj, env=env)
    ckpt = proj / "checkpoints" / f"{RUN}.pt"
    proc = subprocess.Popen(
        [DVC, "repro", f"train@{RUN}"],
        cwd=proj,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not ckpt.exists():
        assert proc.poll() is None, "training ended before its first epoch checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole stage: dvc and the python it started
    proc.wait()
    assert not (proj / "models" / f"{RUN}.pt").exists()
    saved = proj.parent / "saved.pt"
    shutil.copy(ckpt, saved)
    return proj, env, saved


def _retrain(proj, env, saved, *stages):
    shutil.copy(saved, proj / "checkpoints" / f"{RUN}.pt")
    out = sh(DVC, "repro", *stages, cwd=proj, env=env)
    return out, (proj / "models" / f"{RUN}.pt").read_bytes(), (proj / "metrics" / "history" / f"{RUN}.csv").read_text()


def test_a_killed_run_resumes_to_the_uninterrupted_result(interrupted):
    proj, env, saved = interrupted
    out, resumed_model, resumed_history = _retrain(proj, env, saved, f"train@{RUN}")
    assert f"{RUN}: resuming after epoch" in out
    assert not (proj / "checkpoints" / f"{RUN}.pt").exists()  # cleared once the model is written
    out = sh(DVC, "repro", "-f", f"train@{RUN}", cwd=proj, env=env)
    assert "resuming" not in out and "starting from scratch" not in out
    assert (proj / "models" / f"{RUN}.pt").read_bytes() == resumed_model
    assert (proj / "metrics" / "history" / f"{RUN}.csv").read_text() == resumed_history
    assert len(resumed_history.splitlines()) == 1 + 4


def test_a_code_change_retrains_instead_of_resuming(interrupted):
    proj, env, saved = interrupted
    losses = proj / "vae" / "losses.py"
    code = losses.read_text()
    _, unchanged_model, _ = _retrain(proj, env, saved, f"train@{RUN}")
    # A real change to the loss: the old checkpoint must not stand in for the new code.
    losses.write_text(
        code + "\n_bce = reconstruction_nll\n\n\ndef reconstruction_nll(logits, x):\n    return 1.5 * _bce(logits, x)\n"
    )
    try:
        out, changed_model, history = _retrain(proj, env, saved, f"train@{RUN}")
    finally:
        losses.write_text(code)
    assert "resuming" not in out and f"{RUN}: starting from scratch" in out and "other code" in out
    assert changed_model != unchanged_model and len(history.splitlines()) == 1 + 4


def test_a_change_of_an_eval_param_the_stage_declares_retrains(interrupted):
    proj, env, saved = interrupted
    good = (proj / "params.yaml").read_text()
    set_params(proj, {"eval.seed": 4321})
    try:
        out, _, _ = _retrain(proj, env, saved, f"train@{RUN}")
    finally:
        (proj / "params.yaml").write_text(good)
    assert "resuming" not in out and f"{RUN}: starting from scratch" in out
