"""Does this machine train a commit's bytes? The first epoch of `study`-recipe runs, from that commit's own code
(`git archive`, outside this checkout), at one thread, against the first line of the history the commit
recorded (dvc.lock's md5, read from the in-git remote dvc-remote/). The `study` recipe has a constant lr and
no warm-up, so a one-epoch run's first epoch is the 50-epoch run's: two minutes tell whether a 14-hour
rerun can be byte-identical here (docs/reproducibility.md).

    python -m benchmarks.first_epoch 8f41608 study-deep_mlp-1-0 study-conv-1-0 study-residual-1-1
    python -m benchmarks.first_epoch HEAD study-conv-1-0     # today's code, against what HEAD recorded

Needs data/DATASET in this checkout (`dvc pull` or the download stage). Prints one line per run: the
recorded first epoch (train, test −ELBO), this machine's, and whether the CSV line is the same to the byte.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from tests.smoke import set_params

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from engine_worker import cpu  # noqa: E402  (the study's record of a run's CPU)
from rerun_diff import git_show, outputs  # noqa: E402


def recorded_history(rev: str, run: str) -> str:
    """The history CSV that `rev`'s dvc.lock records for `run`, from the remote kept in git."""
    lock = git_show(rev, "dvc.lock")
    if lock is None:
        sys.exit(f"no dvc.lock at {rev}: name a commit of this project's study")
    md5 = outputs(lock, f"train@{run}").get(f"metrics/history/{run}.csv")
    if md5 is None:
        sys.exit(f"{rev}'s dvc.lock records no train@{run}: name a run it committed (`git show {rev}:dvc.lock`)")
    obj = ROOT / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]
    if not obj.is_file():
        sys.exit(
            f"{obj} is missing: the in-git remote has no {run}'s history at {rev} (git checkout {rev} -- dvc-remote)"
        )
    return obj.read_text()


def first_epoch(project: Path, run: str) -> str:
    recipe, family, z, seed = run.split("-")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "stages.train", recipe, family, z, seed], cwd=project, env=env, check=True)
    return (project / "metrics" / "history" / f"{run}.csv").read_text().splitlines()[1]


def elbos(line: str) -> str:
    """A history line's train and test −ELBO."""
    cols = line.split(",")
    return f"train {cols[1]}, test {cols[4]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="the commit whose code trains and whose dvc.lock holds the recorded history")
    ap.add_argument("runs", nargs="+", help="study-recipe runs, e.g. study-conv-1-0")
    args = ap.parse_args()
    dataset = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["dataset"]
    data = ROOT / "data" / dataset
    if not data.is_dir():
        sys.exit(f"{data} is missing: `dvc pull download` (or `dvc repro download`) first")
    for run in args.runs:
        if not run.startswith("study-"):
            sys.exit(f"{run}: only `study` runs (constant lr, no warm-up) have a one-epoch run's first epoch")
    recorded = {run: recorded_history(args.rev, run).splitlines()[1] for run in args.runs}
    print(f"this machine: {cpu()}; torch's CPU capability {torch.backends.cpu.get_cpu_capability()}")
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        archive = subprocess.run(["git", "archive", args.rev], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "--exclude=dvc-remote"], cwd=project, input=archive, check=True)
        (project / "data").mkdir(exist_ok=True)
        (project / "data" / dataset).symlink_to(data)
        set_params(project, {"train.epochs": 1})
        subprocess.run([sys.executable, "-m", "stages.check"], cwd=project, check=True, capture_output=True)
        for run in args.runs:
            here = first_epoch(project, run)
            same = "same bytes" if here == recorded[run] else "different"
            print(f"{run}: {args.rev} recorded {elbos(recorded[run])}; this machine {elbos(here)}: {same}")


if __name__ == "__main__":
    main()
