"""Run the whole study on Dask: every run computed by a worker, results brought home by DVC.

    python tools/study.py                              # this machine: 2 workers x 1 thread
    python tools/study.py --workers 8 --threads 4      # a 32-core machine
    python tools/study.py --scheduler tls://HOST:8786 --tls-ca-file ca.pem --tls-cert me.pem --tls-key me.key

What happens, in order (docs/cluster.md has the cluster recipes):
1. Here, in your checkout: `dvc repro --pull check download`, then `dvc push` of the data, so a
   bad param or an unreachable mirror stops the study before anything is trained; then
   `dvc pull` of every run dvc.lock records that the remote holds (a study committed part by part).
2. A snapshot of the checkout's tracked files (uncommitted edits included) goes to every
   worker as a git bundle. One Dask task per run, longest first, handed out as workers free: in a workspace of the
   worker's own, `dvc repro --pull -s check download train@RUN evaluate@RUN`
   (train_subset@RUN evaluate_subset@RUN for a subset recipe's run), then
   `dvc push --run-cache` (tools/engine_worker.py).
   A run whose worker dies is rerun once elsewhere; a run that fails is named at once with its
   log (logs/study/RUN.log), not rerun, and does not stop the others.
3. Here again: `dvc repro --pull` restores every train@/evaluate@ stage from DVC's
   run-cache (it never trains: a run missing from the run-cache stops with one line),
   then runs plot@ and compare and leaves a complete dvc.lock.

Results come home only through DVC's remote and run-cache: the project's default remote is
dvc-remote/, kept in git (.dvc/config). Where no default remote is configured, a local one
is set up in .dvc/config.local (`--remote` names another).
The embedded cluster listens on 127.0.0.1 only, behind temporary TLS credentials, with no dashboard
nor any other HTTP page unless `--dashboard`; an external scheduler must be tls:// unless `--insecure` (tools/engine_cluster.py).
Ctrl-C or SIGTERM stops every run, waits for every DVC process to exit and leaves
dvc.lock whole; the same command again redoes only what is not in the run-cache, and a run
stopped mid-training resumes from its last epoch (checkpoints are kept per machine, in
$VAE_STUDY_SCRATCH/checkpoints/, per checkout and thread count).
The estimate, and the order of the runs, are in tools/engine_plan.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import engine_plan  # noqa: E402
import engine_worker  # noqa: E402
from engine_checkout import DEFAULT_REMOTE, hold_study_lock, in_checkout, make_snapshot, remote_url, say, to_compute  # noqa: E402
from engine_cluster import check_options, connect, probe  # noqa: E402
from engine_plan import estimate, plan, progress  # noqa: E402
from engine_worker import Interrupted, run_task, stage_env, unpack, worker_repro  # noqa: E402

from vae.config import ParamsError, load_params  # noqa: E402

# Set by SIGINT or SIGTERM, and polled by whatever waits (a DVC process, the runs): the handler raises
# nothing, so no library's `except Exception` can swallow a stop, and no cleanup is cut short half-way.
STOP = threading.Event()


def on_signal(signum, frame) -> None:
    STOP.set()


def dvc(args: list[str], cwd: Path, env: dict, log: Path | None = None, stop=STOP.is_set) -> int:
    """`dvc ARGS` through tools/atomic_dvc.py, stopped (Interrupted) when a signal sets STOP."""
    return engine_worker.dvc(args, cwd, env, log, stop=stop)


def never() -> bool:
    return False


def submit(client, fn, *args, **kwargs):
    """One task, never retried: a run that raised failed by its own code and would fail again, so it is
    reported at once. A run whose worker died is rerun by the scheduler (allowed-failures, engine_cluster)."""
    return client.submit(fn, *args, pure=False, **kwargs)


def slots(client, gpus_per_run: float | None) -> int:
    """How many runs the cluster computes at once now (workers may come and go): one per worker thread,
    or per `gpus_per_run` of a worker's GPU resource where runs take GPUs."""
    workers = client.scheduler_info()["workers"].values()
    if gpus_per_run:
        return sum(min(w["nthreads"], int(w.get("resources", {}).get("GPU", 0) // gpus_per_run)) for w in workers)
    return sum(w["nthreads"] for w in workers)


def handed_out(items, submit_one, slots) -> Iterator:
    """Each finished future of `submit_one(item)`, the items handed out in their order as slots free.

    Not all at once with priorities: Dask's queue is not strictly by priority (a task group of at most
    twice the cluster's threads skips it and goes to a worker at once, and runs' keys fall into groups by
    recipe and family), and a long run started late costs the study's wall time. A signal (STOP) ends it."""
    from distributed import wait

    queue, pending = list(items), set[object]()
    while (queue or pending) and not STOP.is_set():
        while queue and len(pending) < max(1, slots()):
            pending.add(submit_one(queue.pop(0)))
        try:
            ready, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
        except TimeoutError:
            continue
        yield from ready


def compute(todo, args, snapshot, bundle, params, headline: str) -> tuple[list[dict], dict[str, str]]:
    """Every run of `todo` on the cluster; (results, {run: why it failed}). A signal (STOP) stops it."""
    import cloudpickle
    from distributed import Event, wait

    # Workers on other machines do not have these files: send the tasks' code with them.
    for module in (engine_worker, engine_plan):
        cloudpickle.register_pickle_by_value(module)
    client, cluster = connect(args)
    stop = Event(snapshot["stop"], client=client)
    stop.clear()
    done: list[dict] = []
    records: list[dict] = []  # done's, as benchmarks/study_runs.jsonl has them
    failed: dict[str, str] = {}
    futures: dict = {}  # filled one by one: a signal at any moment waits for what was submitted
    cost, pace = None, 1.0

    def finished(future, run: str) -> None:
        r = future.result() if future.status == "finished" else None
        if r is not None and r.get("stopped"):
            if not stop.is_set():  # a stop this study did not ask for: name the run, do not lose it
                failed[run] = "stopped by someone else's stop request"
                say(f"{run} FAILED: {failed[run]}")
            return
        if r is None:
            failed[run] = str(future.exception())
            write_log(run, failed[run])
            lost = " (its worker died twice)" if type(future.exception()).__name__ == "KilledWorker" else ""
            say(
                f"{run} FAILED{lost}: logs/study/{run}.log {progress(todo, records, failed, t0, params, cost, pace, at_once)}"
            )
            return
        done.append(r)
        write_log(run, r["log"])
        unpack(r["tensorboard"], ROOT / "logs" / run)
        s = r["seconds"]
        records.append(run_record(r, workers, args.threads, started))
        record(records[-1])
        say(
            f"{run} done on {r['host']} in {s['compute'] / 60:.1f} min "
            f"(+{s['workspace'] + s['push']:.0f} s workspace and push) "
            f"{progress(todo, records, failed, t0, params, cost, pace, at_once)}"
        )

    try:
        line, cost, pace = estimate(todo, args, params, None if args.scheduler else client)
        say(f"{headline}: {line}")
        # The calibration may have costed a family it had no figure for: longest first, by its cost.
        todo = sorted(todo, key=lambda t: -engine_plan.minutes(t[0], params, cost))
        workers = len(client.scheduler_info()["workers"])
        at_once = slots(client, args.gpus_per_run)
        t0 = time.monotonic()
        started = utc_now()
        data = client.scatter(bundle, broadcast=True)
        say(f"{len(todo)} runs on {workers} workers ({client.scheduler.address})")

        def submit_run(item):
            run, stages = item
            future = submit(
                client,
                run_task,
                run,
                stages,
                snapshot,
                data,
                args.threads,
                key=f"run-{run}",
                resources={"GPU": args.gpus_per_run} if args.gpus_per_run else None,
            )
            futures[future] = run
            return future

        for future in handed_out(todo, submit_run, lambda: slots(client, args.gpus_per_run)):
            finished(future, futures[future])
        if STOP.is_set():
            say("interrupted: stopping every run and waiting for its DVC processes to exit")
            stop.set()
            # Each running task interrupts its DVC (SIGINT, then SIGKILL after 60 s) and returns; the
            # others return at once. A second signal changes nothing: this wait keeps dvc.lock whole.
            try:
                wait(list(futures), timeout=150)
            except TimeoutError:  # tasks still queued on a busy external cluster: they will not start now
                client.cancel([f for f in futures if not f.done()])
            # A run that finished while we stopped is in the run-cache: keep its log, pictures and record too.
            for future, run in futures.items():
                if future.status == "finished" and run not in failed and all(r["run"] != run for r in done):
                    finished(future, run)
            if futures:
                unfinished = len(todo) - len(done) - len(failed)
                record(
                    {
                        "study_started": started,
                        "stopped": utc_now(),
                        "workers": workers,
                        "threads": args.threads,
                        "unfinished": unfinished,
                    }
                )
    finally:
        try:
            client.run(engine_worker.remove_workspaces, snapshot["commit"])
        except Exception:
            pass  # a worker that is gone has nothing left to remove
        client.close()
        if cluster is not None:
            cluster.close()
    return done, failed


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def record(line: dict) -> None:
    """A line of logs/study/runs.jsonl, the study's own account of its time: one per computed run, and
    one where a study is stopped. benchmarks/study_time.py sums it, also over several sittings."""
    path = ROOT / "logs" / "study" / "runs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")


def run_record(result: dict, workers: int, threads: int, started: str) -> dict:
    resumed = re.search(r"resuming after epoch (\d+)", result["log"])
    epochs = re.findall(r"^\S+ epoch \d+: .* (\d+\.\d+)s$", result["log"], re.M)  # the train stage's epoch lines
    return {
        "run": result["run"],
        "host": result["host"],
        "cpu": result["cpu"],
        "study_started": started,
        "finished": utc_now(),
        "workers": workers,
        "threads": threads,
        "seconds": {k: round(v, 1) for k, v in result["seconds"].items()},
        "epoch_seconds": round(sum(map(float, epochs)), 1),  # of compute; the rest is mostly evaluation
        # A resumed run's seconds are only its last part, a restored one's are DVC restoring it from the
        # run-cache (it finished while an earlier study stopped): study_time.py leaves both out of the means.
        "resumed_after_epoch": int(resumed.group(1)) if resumed else 0,
        "from_run_cache": re.search(rf"Stage 'train(_subset)?@{result['run']}' is cached - skipping run", result["log"])
        is not None,
    }


def write_log(run: str, text: str) -> None:
    path = ROOT / "logs" / "study" / f"{run}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", "--lanes", type=int, default=2, help="runs computed at once here (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="an existing Dask scheduler, tls://HOST:8786, instead of the embedded one",
    )
    ap.add_argument("--tls-ca-file", metavar="CA", help="the CA that signed the scheduler's certificate")
    ap.add_argument("--tls-cert", metavar="CERT", help="this machine's certificate, signed by the same CA")
    ap.add_argument("--tls-key", metavar="KEY", help="this machine's private key")
    ap.add_argument(
        "--insecure",
        action="store_true",
        help="accept a scheduler without TLS (tcp://): anyone who reaches its port runs code as you",
    )
    ap.add_argument(
        "--connect-timeout", type=float, default=30, metavar="S", help="seconds to reach the scheduler (default 30)"
    )
    ap.add_argument("--remote", help="the DVC remote results go through (default: the default remote)")
    ap.add_argument(
        "--gpus-per-run",
        type=float,
        default=0,
        help="Dask resource GPU each run takes (workers declare theirs: `dask worker --resources GPU=1`)",
    )
    ap.add_argument("--dashboard", action="store_true", help="Dask's dashboard on 127.0.0.1:8787")
    ap.add_argument("--dry", action="store_true", help="print the plan and exit")
    ap.add_argument("--only", metavar="REGEX", help="only the runs whose names match; compare is not run")
    args = ap.parse_args()
    if args.workers < 1 or args.threads < 1 or args.connect_timeout <= 0:
        ap.error("--workers and --threads must be at least 1, --connect-timeout above 0")
    check_options(args)
    os.chdir(ROOT)
    try:
        params = load_params(ROOT / "params.yaml")
    except ParamsError as e:
        sys.exit(f"study: {e}")
    todo = plan(params, args.only)
    if args.dry:
        for run, stages in todo:
            print(f"{run}: dvc {' '.join(worker_repro(stages))}")
        return
    lock = hold_study_lock()  # noqa: F841 (held until exit)
    # Ctrl-C, and SIGTERM (a batch scheduler's kill, `kill PID`), stop the study cleanly, even where
    # the study was started with SIGINT ignored (a background job of a non-interactive shell).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    env = stage_env(args.threads)
    try:
        sys.exit(study(args, params, todo, env))
    except Interrupted:
        sys.exit(
            "study: stopped; dvc.lock holds every run that finished. Run the same command to go on "
            "(runs stopped mid-training resume from their last epoch)"
        )


def study(args, params: dict, todo, env: dict) -> int:
    remote = remote_url(args.remote)
    if args.scheduler and (remote == str(DEFAULT_REMOTE) or in_checkout(remote)):
        sys.exit(
            f"study: workers on other machines cannot reach the remote {remote} on this machine; add a shared one "
            "(`dvc remote add -d NAME URL`: ssh://, s3://, or a path on a shared file system)"
        )
    if args.scheduler:
        probe(args)  # a wrong address or certificate is found before any DVC work
    coordinator = {**env, "VAE_STUDY_COORDINATOR": "1"}
    failed_check = dvc(["repro", "--pull", "check", "download"], ROOT, coordinator)
    if failed_check or dvc(["push", "check", "download"], ROOT, env):
        say("check, download or pushing the data failed (above); nothing was trained")
        return 1
    # Runs that dvc.lock records and the remote holds (a fresh clone's, or a study committed part by
    # part) come home here instead of being recomputed. DVC resolves the whole pipeline once per target
    # named: the full study names none (144 targets took 258 CPU-s, none 3).
    dvc(["pull", "-q", "--allow-missing", *([s for _, st in todo for s in st] if args.only else [])], ROOT, env)
    todo = to_compute(todo, env)
    t0 = time.monotonic()
    done: list[dict] = []
    failed: dict[str, str] = {}
    if todo and not STOP.is_set():
        headline = f"{len(todo)} runs to compute ({len(plan(params, args.only)) - len(todo)} up to date)"
        snapshot, bundle = make_snapshot(remote)
        done, failed = compute(todo, args, snapshot, bundle, params, headline)
    if STOP.is_set():
        # The runs that finished are in the run-cache: restore them (never compute) into dvc.lock, so
        # what was done can be committed now, and the next study starts after them. A second signal
        # cannot cut this short (stop=never): it is what leaves dvc.lock whole.
        stages = dict(todo)
        if done:
            say(f"restoring the {len(done)} finished runs into dvc.lock")
            restore = {**env, "VAE_RESTORE_ONLY": "1"}
            dvc(["repro", "--pull", "-s", *[s for r in done for s in stages[r["run"]]]], ROOT, restore, stop=never)
        raise Interrupted("stopped")
    if todo:
        say(f"{len(done)}/{len(todo)} runs computed in {(time.monotonic() - t0) / 60:.1f} min wall time")
        if done:
            mean = {k: sum(r["seconds"][k] for r in done) / len(done) for k in done[0]["seconds"]}
            say("per run, mean seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in mean.items()))
    # Assembly: restore, never compute, the runs; then plots and compare.
    targets = [] if not args.only else [s for run, st in plan(params, args.only) for s in st]
    assemble = {**env, "VAE_RESTORE_ONLY": "1"}
    keep = ["--keep-going"] if failed else []
    rc = dvc(["repro", "--pull", *keep, *(["-s", *targets] if targets else [])], ROOT, assemble)
    if failed:
        say(f"failed, see logs/study/RUN.log: {', '.join(sorted(failed))}")
        return 1
    if rc:
        say("assembling the results failed (above); no run was recomputed here")
    return rc


if __name__ == "__main__":
    main()
