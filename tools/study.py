"""Run the whole study: download, every run (train, evaluate, and plot where params ask), then compare.

Runs go out in parallel lanes, longest first, each lane one `dvc repro -s` per
run with its own thread count, so a machine with more cores finishes sooner:

    python tools/study.py --lanes 2 --threads 1     # this project's 2-core machines
    python tools/study.py --lanes 8 --threads 4     # a 32-core machine

A stage already up to date is skipped by DVC as usual. Each lane's output goes
to logs/study/RUN.log; a failed run is reported at the end (exit status 1) and
does not stop the others. `--dry` prints the plan. `--only REGEX` runs the runs
whose names match (e.g. `--only '^study-'`) and leaves `compare`, which needs
every run, for a later call.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae.config import ParamsError, cell_name, load_params, run_name, runs  # noqa: E402

# Minutes per 50-epoch run at one thread on the 2-core development machine (README, Speed);
# only the order matters: the longest runs start first so no lane is left with one at the end.
COST = {"residual": 27, "conv": 14, "deep_mlp": 4.5, "simple_mlp": 2.7}


def plan(params: dict) -> list[tuple[str, list[str]]]:
    """(run, the stages `dvc repro -s` runs for it), longest first."""
    order = sorted(runs(params), key=lambda r: -COST.get(r[1], 0))
    out = []
    for recipe, family, z, seed in order:
        run = run_name(recipe, family, z, seed)
        stages = [f"train@{run}", f"evaluate@{run}"]
        if seed == params["plot"]["seed"]:
            stages.append(f"plot@{cell_name(recipe, family, z)}")
        out.append((run, stages))
    return out


def dvc(*args: str, env: dict | None = None, log: Path | None = None) -> int:
    cmd = [str(Path(sys.executable).parent / "dvc"), "--wait-for-lock", *args]
    if log is None:
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        return subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lanes", type=int, default=2, help="runs trained at the same time (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per lane (default 1)")
    ap.add_argument("--dry", action="store_true", help="print the plan and exit")
    ap.add_argument("--only", metavar="REGEX", help="only the runs whose names match; compare is not run")
    args = ap.parse_args()
    if args.lanes < 1 or args.threads < 1:
        ap.error("--lanes and --threads must be at least 1")
    try:
        params = load_params(ROOT / "params.yaml")
    except ParamsError as e:
        sys.exit(f"study: {e}")
    todo = [(run, stages) for run, stages in plan(params) if not args.only or re.search(args.only, run)]
    if args.dry:
        for run, stages in todo:
            print(f"{run}: dvc repro -s {' '.join(stages)}")
        return
    # Stages call `python`: make it this interpreter, so the study runs from an unactivated venv too.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if dvc("repro", "check", "download", env=env):
        sys.exit("study: check or download failed; nothing was trained")
    t0 = time.monotonic()

    def one(item):
        run, stages = item
        start = time.monotonic()
        rc = dvc("repro", "-s", *stages, env=env, log=ROOT / "logs" / "study" / f"{run}.log")
        print(f"study: {run} {'done' if rc == 0 else 'FAILED'} in {(time.monotonic() - start) / 60:.1f} min "
              f"(logs/study/{run}.log)", flush=True)
        return run, rc

    with ThreadPoolExecutor(args.lanes) as pool:
        failed = [run for run, rc in pool.map(one, todo) if rc]
    print(f"study: {len(todo) - len(failed)}/{len(todo)} runs in {(time.monotonic() - t0) / 60:.1f} min wall time")
    if failed:
        sys.exit(f"study: failed: {', '.join(failed)}; see logs/study/RUN.log; compare not run")
    if not args.only:
        sys.exit(dvc("repro", "compare", env=env))


if __name__ == "__main__":
    main()
