"""Faults provoked for real: crashes mid-write, full disks, tampered checkpoints, divergence guards."""

import errno
import json
import math
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stages.common import no_room
from tests.test_stages import _params, _workspace, run_stage
from tests.test_training import CFG, SETTINGS, data
from vae import atomic
from vae.checkpoints import CheckpointError, load_checkpoint
from vae.training import blew_up, train


def test_crash_mid_write_leaves_previous_file_intact(tmp_path):
    target = tmp_path / "m.json"
    atomic.write_json(target, {"total": 1.0})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text('{"total": 2')  # half-written
            raise RuntimeError("killed")
    assert target.read_text() == '{\n  "total": 1.0\n}\n'
    assert os.listdir(tmp_path) == ["m.json"]  # no temp file left behind


# Python ignores SIGXFSZ, so a write past `ulimit -f` (in KiB) fails with EFBIG, as one past a
# full disk fails with ENOSPC; both take the same path through vae.atomic and stage_main.
FULL_DISK = {
    "file": "write_bytes('out/m.pt', b'y' * 100_000)",
    "directory": "with atomic_dir('out') as d:\n    write_bytes(d / 'm.pt', b'y' * 100_000)",
}


def under_file_size_limit(cwd: Path, kib: int, script: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        ["bash", "-c", f'ulimit -f {kib}; exec "$0" -c "$1"', sys.executable, script],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("what", sorted(FULL_DISK))
def test_a_full_disk_is_one_line_naming_the_file_and_the_previous_one_stays(tmp_path, what):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "m.pt").write_text("previous")
    script = (
        "from stages.common import stage_main\nfrom vae.atomic import atomic_dir, write_bytes\n"
        f"def main():\n    {FULL_DISK[what].replace(chr(10), chr(10) + '    ')}\nstage_main('train', main)"
    )
    r = under_file_size_limit(tmp_path, 8, script)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert re.fullmatch(
        r"train: file too large writing out/m\.pt \([\d.]+ [MG]B free on /\S*\); raise the "
        r"file-size limit \(`ulimit -f`\) or free some space, then `dvc checkout` restores this "
        r"stage's previous outputs\n",
        r.stderr,
    ), r.stderr
    assert (tmp_path / "out" / "m.pt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["m.pt", "out"]  # no temp file or directory left


def test_no_space_names_the_free_space_on_the_files_file_system(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    asked, disk_usage = [], shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: asked.append(p) or disk_usage(p)._replace(free=12_000_000))
    line = no_room("train", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "models/x.pt"))  # models/ not made yet
    mount = tmp_path
    while not os.path.ismount(mount):
        mount = mount.parent
    assert asked == [mount]
    assert line == (
        f"train: no space left writing models/x.pt (12.0 MB free on {mount}); free some space, "
        "then `dvc checkout` restores this stage's previous outputs"
    )


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_writes_get_the_mode_a_plain_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "f.txt", "x")
        with atomic.atomic_dir(tmp_path / "d") as d:
            (d / "inner").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask


def test_non_finite_metrics_are_never_written(tmp_path):
    with pytest.raises(ValueError, match=r"\$.test.kl is nan"):
        atomic.write_json(tmp_path / "m.json", {"test": {"kl": float("nan")}})
    assert not (tmp_path / "m.json").exists()


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_tampered_checkpoint_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)  # torch's refusal runs to a dozen lines; a stage prints one
    assert not (tmp_path / "PWNED").exists()


def test_logvar_clamp_keeps_a_run_at_too_high_an_lr_finite(tmp_path):
    # At lr 1 Adam moves every weight by ~1 a step: within a few steps the encoder's logvar
    # passes 88, exp() overflows float32 and the loss is inf or nan. Clamping logvar removes
    # the overflow; the run stays finite (and poor: this is a guard, not a fix for the lr).
    # grad_clip is no such guard: Adam's step does not scale with the gradient, and with
    # clipping alone (at 1 or 100) runs at lr 0.3 still overflowed within 3 epochs (seeds 0, 1).
    def fit(name, **guards):
        return train(
            "simple_mlp-2",
            "simple_mlp",
            2,
            CFG,
            {**SETTINGS, "lr": 1.0, **guards},
            data(),
            data(50, 1),
            checkpoint=tmp_path / f"{name}.pt",
            log_dir=tmp_path / name,
            eval_seed=1,
            eval_batch_size=25,
            fingerprint=name,
        )

    _, history = fit("unguarded")
    assert len(history) == 1 and blew_up(history)  # stopped in epoch 1: a diverged run
    _, history = fit("clamped", logvar_clamp=10.0)
    assert all(torch.isfinite(torch.tensor(v)) for row in history for v in row.values())


def test_a_run_whose_loss_blows_up_is_recorded_and_compare_counts_it(tmp_path, data_mirror, monkeypatch):
    # lr 1 without logvar_clamp: the loss becomes inf or nan within an epoch or two (see above). The run still
    # writes its model (that of its last finite epoch) and history, evaluate marks it, and compare counts it.
    def one_run(p):
        p.update(recipes=["study"], families=["simple_mlp"], subset_recipes=[], latent_dims=[2], seeds=[0])
        p["data"].update(train_subset=256)
        p["eval"].update(iw_samples=5, literature_iw_samples=2, iw_images=50)

    _workspace(tmp_path, data_mirror, monkeypatch)
    _params(tmp_path, one_run, epochs=3, lr=1.0)
    run = "study-simple_mlp-2-0"
    for stage in (
        ["stages.check"],
        ["stages.train", *run.split("-")],
        ["stages.evaluate", *run.split("-")],
        ["stages.compare"],
    ):
        r = run_stage(tmp_path, *stage)
        assert r.returncode == 0, r.stderr
    history = (tmp_path / "metrics" / "history" / f"{run}.csv").read_text().splitlines()[1:]
    blown = len(history)  # the epoch that blew up, the history's last
    assert blown < 3 and history[-1].startswith(f"{blown},nan,nan,nan,nan,nan,nan,")
    assert all("nan" not in row for row in history[:-1])
    metrics = json.loads((tmp_path / "metrics" / "runs" / f"{run}.json").read_text())
    assert metrics["diverged"] is True and metrics["collapsed"] in (True, False)
    assert all(v is None or math.isfinite(v) for k, v in metrics.items() if k not in ("collapsed", "diverged"))
    details = json.loads((tmp_path / "metrics" / "details" / f"{run}.json").read_text())
    # The reason is the comparison's own (vae/metrics.py's divergence, from the history), word for word.
    assert details["diverged"].startswith(f"loss not finite in epoch {blown}: training stopped there, figures of ")
    assert details["epochs"] == blown - 1
    assert json.loads((tmp_path / "metrics" / "cells" / "study-simple_mlp-2.json").read_text())["diverged"] == 1
    md = (tmp_path / "metrics" / "comparison.md").read_text()
    assert f"⚠ 1/1: seed 0, loss not finite in epoch {blown}: training stopped there, figures of " in md
