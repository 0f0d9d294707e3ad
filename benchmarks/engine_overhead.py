"""What the study's embedded Dask cluster costs while its tasks wait, as a study's tasks do on DVC.

Two workers of one thread each run a task that waits on a subprocess (polling it once a second, as
tools/study.py's tasks do); the CPU time of the coordinator, scheduler and workers over `--seconds`
is measured with Dask's default configuration and with the study's (engine_cluster.DASK_CONFIG), alternating
`--rounds` times, each in a fresh process. Prints CPU-seconds per minute of wall time, median and range.

    python -m benchmarks.engine_overhead [--seconds 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wait_on_a_process(seconds: float) -> int:
    proc = subprocess.Popen(["sleep", str(seconds)])
    while True:
        try:
            return proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def measure(config: str, seconds: float) -> float:
    """CPU-seconds per minute of the cluster and this process, while both workers wait."""
    import psutil

    sys.path.insert(0, str(ROOT / "tools"))
    import engine_cluster

    if config == "default":
        engine_cluster.DASK_CONFIG = {}
    client, cluster = engine_cluster.connect(Namespace(scheduler=None, workers=2, dashboard=False, gpus_per_run=0))
    try:
        futures = [client.submit(wait_on_a_process, seconds + 10, pure=False) for _ in range(2)]
        time.sleep(5)  # both tasks started
        procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
        start = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
        time.sleep(seconds)
        used = sum(sum(p.cpu_times()[:2]) - start[p.pid] for p in procs)
        client.cancel(futures)
        return used * 60 / seconds
    finally:
        client.close()
        cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", choices=["default", "study"], help=argparse.SUPPRESS)  # a single measurement
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.seconds)))
        return
    cpu: dict[str, list[float]] = {"default": [], "study": []}
    for _ in range(args.rounds):
        for config in cpu:
            cmd = [sys.executable, "-m", "benchmarks.engine_overhead", "--one", config, "--seconds", str(args.seconds)]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
            cpu[config].append(json.loads(out.splitlines()[-1]))
    for config, v in cpu.items():
        print(f"{config:8s} CPU-s per minute: {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f}), {len(v)} rounds")


if __name__ == "__main__":
    main()
