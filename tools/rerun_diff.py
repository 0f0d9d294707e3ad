"""What a rerun of the study changed, run by run, against an earlier commit's study.

    python tools/rerun_diff.py 6bc74ab            # every run both commits have, and a summary

For each run in both dvc.locks: whether the model and the history are byte-identical (their md5s in
dvc.lock), and the difference in test -ELBO (`total`: the earlier commit's metrics/runs/RUN.json from
git, this checkout's from the workspace, `dvc pull` brings it). Runs only one side has are counted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]


def git_show(rev: str, path: str) -> str | None:
    r = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def outputs(lock_text: str, stage: str) -> dict[str, str]:
    """{path: md5} of one train@RUN (or train_subset@RUN) stage's outputs."""
    stages = YAML(typ="safe").load(lock_text)["stages"]
    return {o["path"]: o["md5"] for o in stages.get(stage, {}).get("outs", [])}


def train_stages(lock_text: str) -> dict[str, str]:
    """{run: its train stage}, of either group: a run is matched by name, so one whose recipe moved
    between `recipes` and `subset_recipes` (train@ to train_subset@) is still compared."""
    stages = YAML(typ="safe").load(lock_text)["stages"]
    return {s.split("@")[1]: s for s in stages if s.startswith(("train@", "train_subset@"))}


def cell(v: float | None, width: int) -> str:
    return f"{v:{width}.4f}" if v is not None else f"{'?':>{width}}"


def total(text: str | None) -> float | None:
    return None if text is None else json.loads(text).get("total")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="the commit whose study this one reruns")
    args = ap.parse_args()
    before_lock = git_show(args.rev, "dvc.lock")
    if before_lock is None:
        sys.exit(f"rerun_diff: no dvc.lock at {args.rev}")
    after_lock = (ROOT / "dvc.lock").read_text()
    before, after = train_stages(before_lock), train_stages(after_lock)
    # A lock entry identical to the earlier one (deps included) is that study's run, not yet rerun.
    old_stages, new_stages = (YAML(typ="safe").load(t)["stages"] for t in (before_lock, after_lock))
    common = before.keys() & after.keys()
    not_rerun = {r for r in common if old_stages[before[r]] == new_stages[after[r]]}
    both = sorted(common - not_rerun)
    print(f"{'run':28} {'model':9} {'history':9} {'test -ELBO before':>18} {'after':>9} {'diff':>8}")
    same_model = same_history = 0
    largest = 0.0
    for run in both:
        old, new = outputs(before_lock, before[run]), outputs(after_lock, after[run])
        model = old.get(f"models/{run}.pt") == new.get(f"models/{run}.pt")
        history = old.get(f"metrics/history/{run}.csv") == new.get(f"metrics/history/{run}.csv")
        same_model += model
        same_history += history
        path = f"metrics/runs/{run}.json"
        t0 = total(git_show(args.rev, path))
        t1 = total((ROOT / path).read_text()) if (ROOT / path).exists() else None
        diff = None if t0 is None or t1 is None else t1 - t0
        if diff is not None:
            largest = max(largest, abs(diff))
        print(
            f"{run:28} {'same' if model else 'DIFFERS':9} {'same' if history else 'DIFFERS':9} "
            f"{cell(t0, 18)} {cell(t1, 9)} {cell(diff, 8)}"
        )
    print(
        f"\n{len(both)} runs rerun ({len(not_rerun)} not yet): {same_model} models and {same_history} histories byte-identical; "
        f"largest |test -ELBO difference| {largest:.4f} nats; only before: {len(before.keys() - after.keys())}, "
        f"only after: {len(after.keys() - before.keys())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
