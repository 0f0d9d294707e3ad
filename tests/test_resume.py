"""Kill a training stage for real mid-run; `dvc repro` must resume and match an uninterrupted run."""
import json
import os
import signal
import subprocess
import time

from tests.test_pipeline import DVC, make_project, sh

RUN = "tuned-deep_mlp-2"  # warm-up and the lr schedule must resume too


def test_killed_training_resumes_to_identical_metrics(tmp_path, mnist_mirror):
    env = make_project(tmp_path, mnist_mirror, {
        "recipes": ["tuned"], "families": ["deep_mlp"], "latent_dims": [2], "train.epochs": 4, "data.train_subset": 12000})
    sh(DVC, "repro", "download", cwd=tmp_path, env=env)
    ckpt = tmp_path / "checkpoints" / f"{RUN}.pt"

    proc = subprocess.Popen([DVC, "repro", f"train@{RUN}"], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ckpt.exists():
        assert proc.poll() is None, "training ended before its first epoch checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole stage: dvc and the python it started
    proc.wait()
    assert not (tmp_path / "models" / f"{RUN}.pt").exists()

    out = sh(DVC, "repro", f"evaluate@{RUN}", cwd=tmp_path, env=env)
    assert f"{RUN}: resuming after epoch" in out
    resumed = json.loads((tmp_path / "metrics" / "runs" / f"{RUN}.json").read_text())
    resumed_history = (tmp_path / "metrics" / "history" / f"{RUN}.csv").read_text()

    ckpt.unlink()
    out = sh(DVC, "repro", "-f", f"train@{RUN}", f"evaluate@{RUN}", cwd=tmp_path, env=env)
    assert "resuming" not in out
    fresh = json.loads((tmp_path / "metrics" / "runs" / f"{RUN}.json").read_text())
    fresh_history = (tmp_path / "metrics" / "history" / f"{RUN}.csv").read_text()

    assert resumed == fresh
    drop_seconds = lambda text: [line.rsplit(",", 1)[0] for line in text.splitlines()]  # noqa: E731
    assert drop_seconds(resumed_history) == drop_seconds(fresh_history)
    assert len(fresh_history.splitlines()) == 1 + 4
