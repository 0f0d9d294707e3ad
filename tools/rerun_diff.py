"""What a rerun of the study changed, run by run, against an earlier commit's study.

    python tools/rerun_diff.py 6bc74ab            # every run both commits have, and a summary

For each run in both dvc.locks: whether the model and the history are byte-identical (their md5s in
dvc.lock), and the difference in test -ELBO. Then, for every metric column, the largest difference over the
runs with an identical model (the evaluation's own change: 0 where it changed nothing) and over all of them.
The earlier commit's figures are each run's seed's in its metrics/comparison.json (`per_seed`; metrics/runs/
is not in git). This checkout's are the run's own metrics/runs/RUN.json in the workspace, where its md5 is the
one dvc.lock records for it: compare rewrites comparison.json only at a study's end, so in the middle of a
rerun it still holds the earlier runs' figures, which would read as a difference of 0. A run whose file is
missing or not the one dvc.lock records shows `?`. Runs only one side has are counted.
"""

from __future__ import annotations

import argparse
import hashlib
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
    return outs(YAML(typ="safe").load(lock_text)["stages"], stage)


def outs(stages: dict, stage: str) -> dict[str, str]:
    """{path: md5} of one stage's outputs, from a parsed dvc.lock's stages."""
    return {o["path"]: o["md5"] for o in stages.get(stage, {}).get("outs", [])}


def train_stages(lock_text: str) -> dict[str, str]:
    """{run: its train stage}, of either group: a run is matched by name, so one whose recipe moved
    between `recipes` and `subset_recipes` (train@ to train_subset@) is still compared."""
    stages = YAML(typ="safe").load(lock_text)["stages"]
    return {s.split("@")[1]: s for s in stages if s.startswith(("train@", "train_subset@"))}


def cell(v: float | None, width: int) -> str:
    return f"{v:{width}.4f}" if v is not None else f"{'?':>{width}}"


def figures(text: str | None) -> dict[str, dict[str, float | None]]:
    """{run: {column: its seed's value}} from a comparison.json (metrics/comparison.json's per_seed)."""
    runs: dict[str, dict[str, float | None]] = {}
    for recipe, cells in (json.loads(text) if text else {}).items():
        for name, c in cells.items():
            for col, v in c.items():
                for seed, x in (v.get("per_seed", {}) if isinstance(v, dict) else {}).items():
                    runs.setdefault(f"{recipe}-{name}-{seed}", {})[col] = x
    return runs


def run_figures(stages: dict, run: str) -> dict[str, float | None]:
    """{column: value} of the run's metrics/runs/RUN.json in the workspace, if it is the file dvc.lock's
    evaluate stage (of either group) records; {} otherwise. `stages`: the parsed dvc.lock's."""
    path = f"metrics/runs/{run}.json"
    recorded = {**outs(stages, f"evaluate@{run}"), **outs(stages, f"evaluate_subset@{run}")}.get(path)
    file = ROOT / path
    if recorded is None or not file.exists() or hashlib.md5(file.read_bytes()).hexdigest() != recorded:
        return {}
    return json.loads(file.read_text())


def largest(diffs: list[dict[str, float]]) -> dict[str, float]:
    """{column: the largest |difference| over the runs}."""
    cols = dict.fromkeys(c for d in diffs for c in d)
    return {c: max(abs(d[c]) for d in diffs if c in d) for c in cols}


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
    old_figures = figures(git_show(args.rev, "metrics/comparison.json"))
    print(f"{'run':28} {'model':9} {'history':9} {'test -ELBO before':>18} {'after':>9} {'diff':>8}")
    same_model = same_history = diverged = 0
    diffs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for run in both:
        old, new = outputs(before_lock, before[run]), outputs(after_lock, after[run])
        model = old.get(f"models/{run}.pt") == new.get(f"models/{run}.pt")
        history = old.get(f"metrics/history/{run}.csv") == new.get(f"metrics/history/{run}.csv")
        same_model += model
        same_history += history
        f0, f1 = old_figures.get(run, {}), run_figures(new_stages, run)
        # a column both sides have, finite on both (a diverged run's null figures are not compared); flags
        # (true/false) are no figures
        d = {
            c: b - a
            for c, a in f0.items()
            if a is not None and (b := f1.get(c)) is not None and not isinstance(b, bool)
        }
        # A run that blew up in the rerun differs by whatever its blown-up figures are (1e24 for one that diverged
        # on both sides): that says nothing of the others, so it is named, not summed up.
        blown = f1.get("diverged") is True
        diverged += blown
        if not blown:
            diffs[model].append(d)
        t0, t1 = f0.get("total"), f1.get("total")
        print(
            f"{run:28} {'same' if model else 'DIFFERS':9} {'same' if history else 'DIFFERS':9} "
            f"{cell(t0, 18)} {cell(t1, 9)} {cell(d.get('total'), 8)}{'  diverged' if blown else ''}"
        )
    print(
        f"\n{len(both)} runs rerun ({len(not_rerun)} not yet): {same_model} models and {same_history} histories "
        f"byte-identical; only before: {len(before.keys() - after.keys())}, only after: {len(after.keys() - before.keys())}"
    )
    same, every = largest(diffs[True]), largest(diffs[True] + diffs[False])
    if diverged:
        print(f"{diverged} runs diverged in the rerun: left out of the largest differences")
    print(f"\n{'largest |difference|':22} {'identical models':>17} {'all rerun':>10}")
    for col in every:
        print(f"{col:22} {cell(same.get(col), 17)} {cell(every[col], 10)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
