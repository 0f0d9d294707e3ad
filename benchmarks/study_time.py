"""The study's wall time as the engine measured it, from tools/study.py's record of each run.

    python benchmarks/study_time.py                               # logs/study/runs.jsonl (this checkout's)
    python benchmarks/study_time.py benchmarks/study_runs.jsonl   # the committed study's record

Prints, per sitting of the study command (one `study_started`), its workers x threads, runs and wall time
(the first run's start to the last run's end, or to Ctrl-C where the study was stopped), then the mean minutes per run of each recipe and family
(the compute step: `dvc repro` of train@ and evaluate@, check's and download's outputs restored first
(before 2026-12-05: in a step of its own), without workspace and push), split into the
train stage's epochs and the rest (mostly the evaluation), leaving out runs that resumed from a checkpoint
of an earlier sitting or were restored from DVC's run-cache.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def when(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def summary(lines: list[dict]) -> str:
    sittings: dict[str, list[dict]] = defaultdict(list)
    for r in lines:
        sittings[r["study_started"]].append(r)
    out = [
        "| sitting | workers x threads | runs finished | stopped with runs unfinished | wall time |",
        "| --- | --- | --- | --- | --- |",
    ]
    total = 0.0
    for started, rs in sorted(sittings.items()):
        runs = [r for r in rs if "run" in r]
        stops = [r for r in rs if "stopped" in r]
        # From the first run's start to the last run's end, or to the stop, whose unfinished runs
        # resume in a later sitting.
        wall = max(when(r.get("finished") or r["stopped"]) for r in rs) - when(started)
        total += wall
        shape = ", ".join(sorted({f"{r['workers']} x {r['threads']}" for r in rs}))
        stopped = str(stops[-1]["unfinished"]) if stops else ""
        out.append(f"| {started} | {shape} | {len(runs)} | {stopped} | {wall / 60:.0f} min |")
    out.append(f"| all | | {len({r['run'] for r in lines if 'run' in r})} | | {total / 3600:.1f} h |")
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    epochs: dict[tuple[str, str], list[float]] = defaultdict(list)
    resumed: dict[tuple[str, str], int] = defaultdict(int)
    for r in lines:
        if "run" not in r:
            continue
        cell = tuple(r["run"].split("-")[:2])
        # A resumed run's seconds are only the epochs after the resume; a restored one's, DVC restoring it.
        if r.get("resumed_after_epoch") or r.get("from_run_cache") or "epoch_seconds" not in r:
            resumed[cell] += 1
        else:
            cells[cell].append(r["seconds"]["compute"] / 60)
            epochs[cell].append(r["epoch_seconds"] / 60)
    out += [
        "",
        "| recipe | family | runs | minutes per run (mean, min-max) | of which training epochs | the rest "
        "(evaluation) | resumed or restored runs (not in the means) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cell in sorted(set(cells) | set(resumed)):
        m, e = cells[cell], epochs[cell]
        if m:
            mean, train = sum(m) / len(m), sum(e) / len(e)
            figures = f"{mean:.1f} ({min(m):.1f}-{max(m):.1f}) | {train:.1f} | {mean - train:.1f}"
        else:
            figures = "- | - | -"
        out.append(f"| {' | '.join(cell)} | {len(m)} | {figures} | {resumed[cell]} |")
    return "\n".join(out)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "logs" / "study" / "runs.jsonl"
    if not path.is_file():
        sys.exit(f"study_time: no {path}: tools/study.py writes it as runs finish")
    print(summary([json.loads(line) for line in path.read_text().splitlines() if line.strip()]))


if __name__ == "__main__":
    main()
