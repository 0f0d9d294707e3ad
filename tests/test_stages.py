"""Every stage script as a user meets it: `--help`, and failures as one line naming the problem and the fix."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stages.common import stage_main

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem not in ("__init__", "common"))


def run_stage(cwd: Path, *args: str, user: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*(user or []), sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


@pytest.mark.parametrize("stage", STAGES)
def test_help_prints_usage_and_runs_nothing(tmp_path, stage):
    shutil.copy(ROOT / "params.yaml", tmp_path)
    r = run_stage(tmp_path, f"stages.{stage}", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage:"), r.stdout + r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]  # nothing written


def _params(tmp_path: Path, **train) -> None:
    yaml = YAML()
    params = yaml.load((ROOT / "params.yaml").read_text())
    params["train"].update(train)
    with (tmp_path / "params.yaml").open("w") as f:
        yaml.dump(params, f)


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
    assert run_stage(tmp_path, "stages.download").returncode == 0
    line = _one_line(run_stage(tmp_path, "stages.train", "study", "simple_mlp", "2", "0"))
    assert line == ("train: train.device is 'cuda' but no CUDA device is available here; "
                    "set train.device to 'auto' or 'cpu'")


def test_a_missing_model_is_one_line_naming_the_stage_to_rerun(tmp_path):
    _params(tmp_path)
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
    assert line == ("check: cannot write in checks/: permission denied; make it writable "
                    "(or run the pipeline in a checkout you own)")
    assert list((tmp_path / "checks").iterdir()) == []


def test_stage_main_lets_programming_errors_raise():
    def broken():
        raise KeyError("a bug, not a user error")
    with pytest.raises(KeyError):
        stage_main("x", broken)
