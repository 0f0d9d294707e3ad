"""The study's wall time as the engine measured it, from tools/study.py's record of each run.

    python benchmarks/study_time.py                               # logs/study/runs.jsonl (this checkout's)
    python benchmarks/study_time.py benchmarks/study_runs.jsonl   # the committed study's record

Prints, per sitting of the study command (one `study_started`), its workers x threads, runs and wall time
(first run started to last run finished), then the mean minutes per run of each recipe and family
(the compute step: `dvc repro` of train@ and evaluate@, without workspace, pull and push).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def when(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").timestamp()


def summary(lines: list[dict]) -> str:
    sittings: dict[str, list[dict]] = defaultdict(list)
    for r in lines:
        sittings[r["study_started"]].append(r)
    out = ["| sitting | workers x threads | runs | wall time |", "| --- | --- | --- | --- |"]
    total = 0.0
    for started, rs in sorted(sittings.items()):
        first = min(when(r["finished"]) - sum(r["seconds"].values()) for r in rs)
        wall = max(when(r["finished"]) for r in rs) - first
        total += wall
        shape = sorted({f"{r['workers']} x {r['threads']}" for r in rs})
        out.append(f"| {started} | {', '.join(shape)} | {len(rs)} | {wall / 60:.0f} min |")
    runs = len({r["run"] for r in lines})
    out.append(f"| all | | {runs} | {total / 3600:.1f} h |")
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in lines:
        recipe, family = r["run"].split("-")[:2]
        cells[recipe, family].append(r["seconds"]["compute"] / 60)
    out += ["", "| recipe | family | runs | minutes per run (mean, min-max) |", "| --- | --- | --- | --- |"]
    for (recipe, family), m in sorted(cells.items()):
        out.append(f"| {recipe} | {family} | {len(m)} | {sum(m) / len(m):.1f} ({min(m):.1f}-{max(m):.1f}) |")
    return "\n".join(out)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "logs" / "study" / "runs.jsonl"
    if not path.is_file():
        sys.exit(f"study_time: no {path}: tools/study.py writes it as runs finish")
    print(summary([json.loads(line) for line in path.read_text().splitlines() if line.strip()]))


if __name__ == "__main__":
    main()
