"""Every stage script as a user meets it: `--help`, and failures as one line naming the problem and the fix."""

import os
import re
import runpy
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stages.common import stage_main

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem not in ("__init__", "common"))


def run_stage(cwd: Path, *args: str, user: list[str] | None = None, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    return subprocess.run(
        [*(user or []), sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize("stage", STAGES)
def test_help_prints_usage_and_runs_nothing(tmp_path, stage, monkeypatch, capsys):
    # In this process, run as `python -m` runs it (a process per stage would import torch once each).
    shutil.copy(ROOT / "params.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"{stage}.py", "--help"])
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # stage_main sets its own
    monkeypatch.delitem(sys.modules, f"stages.{stage}", raising=False)  # run as a fresh __main__, as -m does
    with pytest.raises(SystemExit) as e:
        runpy.run_module(f"stages.{stage}", run_name="__main__", alter_sys=True)
    out = capsys.readouterr()
    assert e.value.code in (0, None) and out.out.startswith("usage:"), out.out + out.err
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]  # nothing written


def test_a_stage_starts_in_a_fresh_process(tmp_path):
    """What the in-process --help tests cannot see: an import that works only after other tests' imports."""
    shutil.copy(ROOT / "params.yaml", tmp_path)
    r = run_stage(tmp_path, "stages.train", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stdout + r.stderr


def _params(tmp_path: Path, edit=None, **train) -> None:
    yaml = YAML()
    params = yaml.load((ROOT / "params.yaml").read_text())
    params["train"].update(train)
    if edit:
        edit(params)
    with (tmp_path / "params.yaml").open("w") as f:
        yaml.dump(params, f)


def _workspace(tmp_path: Path, data_mirror: str, monkeypatch, **train) -> None:
    """params.yaml for short runs on 256 images, checked as `dvc repro` checks it first, and the data set
    downloaded."""
    _params(tmp_path, lambda p: p["data"].update(train_subset=256), **train)
    monkeypatch.setenv("VAE_DATA_MIRROR", data_mirror)
    assert run_stage(tmp_path, "stages.check").returncode == 0
    assert run_stage(tmp_path, "stages.download").returncode == 0


def ulimit_f(kib: int) -> list[str]:
    """A command prefix limiting the size of every file written to `kib` KiB. Python ignores SIGXFSZ,
    so a write past it fails with EFBIG, as one on a full disk fails with ENOSPC."""
    return ["bash", "-c", f'ulimit -f {kib}; exec "$@"', "bash"]


def _one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_one_line(tmp_path, data_mirror):
    _params(tmp_path, device="cuda")
    env_mirror = {"VAE_DATA_MIRROR": data_mirror}
    os.environ.update(env_mirror)
    # As on the distributed study's coordinator, which checks params but not its workers' devices.
    assert run_stage(tmp_path, "stages.check", VAE_STUDY_COORDINATOR="1").returncode == 0
    assert run_stage(tmp_path, "stages.download").returncode == 0
    line = _one_line(run_stage(tmp_path, "stages.train", "study", "simple_mlp", "2", "0"))
    assert line == (
        "train: train.device is 'cuda' but no CUDA device is available here; set train.device to 'auto' or 'cpu'"
    )


def test_a_missing_model_is_one_line_naming_the_stage_to_rerun(tmp_path):
    _params(tmp_path)
    assert run_stage(tmp_path, "stages.check").returncode == 0
    line = _one_line(run_stage(tmp_path, "stages.evaluate", "study", "conv", "2", "1"))
    assert line == "evaluate: models/study-conv-2-1.pt does not exist; rerun `dvc repro train@study-conv-2-1`"


def test_an_unwritable_output_directory_is_one_line(tmp_path):
    """The real thing: a stage run by a user who may not write the output directory."""
    _params(tmp_path)
    (tmp_path / "checks").mkdir(mode=0o555)
    user = None
    if os.geteuid() == 0:  # root writes anywhere: run the stage as nobody
        if not shutil.which("setpriv"):
            pytest.skip("running as root and setpriv is missing")
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        tmp_path.chmod(0o755)
    line = _one_line(run_stage(tmp_path, "stages.check", user=user))
    assert line == (
        "check: cannot write in checks/: permission denied; make it writable "
        "(or run the pipeline in a checkout you own)"
    )
    assert list((tmp_path / "checks").iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_check_refuses_a_device_this_machine_lacks_before_any_stage_runs(tmp_path):
    _params(tmp_path, device="cuda")
    line = _one_line(run_stage(tmp_path, "stages.check"))
    assert line == (
        "check: train.device is 'cuda' but no CUDA device is available here; set train.device to 'auto' or 'cpu'"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]
    # A recipe's or a family's override is named as the key to change.
    _params(tmp_path, lambda p: p["recipe"].update(study={"families": {"conv": {"device": "mps"}}}))
    line = _one_line(run_stage(tmp_path, "stages.check"))
    assert line == (
        "check: recipe.study.families.conv.device is 'mps' but no MPS device is available here; "
        "set recipe.study.families.conv.device to 'auto' or 'cpu'"
    )
    _params(tmp_path, device="auto")
    assert run_stage(tmp_path, "stages.check").returncode == 0


def test_check_refuses_a_recipe_name_that_cannot_name_a_stage(tmp_path):
    def fast_run(p):
        p["recipes"].append("fast run")
        p["recipe"]["fast run"] = {"epochs": 1}

    _params(tmp_path, fast_run)
    line = _one_line(run_stage(tmp_path, "stages.check"))
    assert line == (
        "check: params.yaml: recipe name 'fast run' in 'recipes' must be letters, digits and '_' "
        "only: it is part of DVC stage names (train@RECIPE-FAMILY-Z-SEED)"
    )


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_restore_only_step_never_computes_a_run(tmp_path, monkeypatch, stage):
    """The study's assembly step: a run DVC could not restore stops at once, before any data is read."""
    _params(tmp_path)
    assert run_stage(tmp_path, "stages.check").returncode == 0
    monkeypatch.setenv("VAE_RESTORE_ONLY", "1")
    line = _one_line(run_stage(tmp_path, f"stages.{stage}", "tuned", "conv", "2", "1"))
    assert line == (
        f"{stage}@tuned-conv-2-1: not found in DVC's run-cache, and this step only restores "
        "(VAE_RESTORE_ONLY is set): the study's workers compute runs; run the study command again"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checks", "params.yaml"]  # no data set, nothing written


FULL = (
    r"train: file too large writing {} \([\d.]+ [MG]B free on /\S*\); raise the file-size limit "
    r"\(`ulimit -f`\) or free some space, then `dvc checkout` restores this stage's previous outputs"
)


def test_a_full_disk_while_training_is_one_line_and_the_previous_model_stays(tmp_path, data_mirror, monkeypatch):
    _workspace(tmp_path, data_mirror, monkeypatch, epochs=1)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "study-simple_mlp-2-0.pt").write_text("previous")
    # The model is 2.6 MB and its epoch checkpoint (with Adam's moments) 7.7 MB: the checkpoint hits 4 MB.
    r = run_stage(tmp_path, "stages.train", "study", "simple_mlp", "2", "0", user=ulimit_f(4000))
    assert re.fullmatch(FULL.format(r"checkpoints/study-simple_mlp-2-0\.pt"), _one_line(r))
    assert (tmp_path / "models" / "study-simple_mlp-2-0.pt").read_text() == "previous"
    assert list((tmp_path / "checkpoints").iterdir()) == []  # no temp file left


def test_a_full_disk_under_the_tensorboard_log_is_one_line(tmp_path, data_mirror, monkeypatch):
    """TensorBoard writes its event file from a thread; a failed write is raised at the next log call."""
    _workspace(tmp_path, data_mirror, monkeypatch, epochs=3)
    # The checkpoint would hit the limit first: leave it out, so the event file (~0.5 KB an epoch) does.
    script = (
        "import runpy, sys, vae.training\nvae.training.write_torch = lambda path, obj: None\n"
        "sys.argv[0] = 'stages/train.py'\nrunpy.run_module('stages.train', run_name='__main__')"
    )
    r = subprocess.run(
        [*ulimit_f(1), sys.executable, "-c", script, "study", "simple_mlp", "2", "0"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert re.fullmatch(FULL.format(r"logs/study-simple_mlp-2-0"), _one_line(r))


def test_stage_main_lets_programming_errors_raise():
    def broken():
        raise KeyError("a bug, not a user error")

    with pytest.raises(KeyError):
        stage_main("x", broken)
