"""Run the whole study on Dask: every run computed by a worker, results brought home by DVC.

    python tools/study.py                              # this machine: 2 workers x 1 thread
    python tools/study.py --workers 8 --threads 4      # a 32-core machine
    python tools/study.py --scheduler tls://HOST:8786 --tls-ca-file ca.pem --tls-cert me.pem --tls-key me.key

What happens, in order (docs/cluster.md has the cluster recipes):
1. Here, in your checkout: `dvc repro --pull check download`, then `dvc push` of the data, so a
   bad param or an unreachable mirror stops the study before anything is trained; then
   `dvc pull` of every run dvc.lock records that the remote holds (a study committed part by part).
2. A snapshot of the checkout's tracked files (uncommitted edits included) goes to every
   worker as a git bundle. One Dask task per run, longest first: in a workspace of the
   worker's own, `dvc repro --pull -s check download train@RUN evaluate@RUN`, then
   `dvc push --run-cache`.
   A task whose worker dies is retried once elsewhere; a run that fails twice is named at
   the end with its log (logs/study/RUN.log) and does not stop the others.
3. Here again: `dvc repro --pull` restores every train@/evaluate@ stage from DVC's
   run-cache (it never trains: a run missing from the run-cache stops with one line),
   then runs plot@ and compare and leaves a complete dvc.lock.

Results come home only through DVC's remote and run-cache: the project's default remote is
dvc-remote/, kept in git (.dvc/config). Where no default remote is configured, a local one
is set up in .dvc/config.local (`--remote` names another).
The embedded cluster listens on 127.0.0.1 only, with no dashboard unless `--dashboard`.
Ctrl-C or SIGTERM stops every run, waits for every DVC process to exit and leaves
dvc.lock whole; the same command again redoes only what is not in the run-cache, and a run
stopped mid-training resumes from its last epoch (checkpoints are kept per machine, in
$VAE_STUDY_SCRATCH/checkpoints/, per checkout and thread count).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae.config import ParamsError, load_params, run_name, runs, train_config  # noqa: E402

# Minutes per 50-epoch run at one thread on the 2-core development machine (README, Speed);
# only the order matters: the longest runs start first so no worker is left with one at the end.
COST = {"residual": 27, "conv": 14, "deep_mlp": 4.5, "simple_mlp": 2.7}
# A binarized run's evaluation adds the IW bound on all 10,000 test images at K=1000 (minutes at one
# thread, extrapolated from 500 images; docs/speed.md).
NLL_COST = {"residual": 19, "conv": 11, "deep_mlp": 2.5, "simple_mlp": 1.7}
# Seconds for CALIBRATION_STEPS training steps (batch 128, z=2) of each family at one thread on the same
# machine, idle (calibrate(); the median of 3 on 2026-12-05): the estimate scales COST by how long they take here.
CALIBRATION_STEPS = 10
CALIBRATION_S = {"residual": 0.75, "conv": 0.32, "deep_mlp": 0.15, "simple_mlp": 0.08}
# Where a checkout's results go when no DVC remote is configured: outside the checkout,
# shared by every checkout of this user, so a second clone pulls what the first computed.
DEFAULT_REMOTE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vae-study" / "remote"
SNAPSHOT_REF = "refs/vae-study/snapshot"
# A task only waits on its DVC process, so Dask's statistical profiler (a stack sample every 10 ms) and its
# 20 ms event-loop health check are pure cost, taken from training: the embedded cluster of 2 workers used
# 5.7 CPU-s a minute with them, 1.8 without (the 2-core machine, median of 3; benchmarks/engine_overhead.py).
# Workers on other machines keep their own configuration (docs/cluster.md).
DASK_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s"}


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the study command."""


def say(msg: str) -> None:
    print(f"study: {msg}", flush=True)


# --- one DVC command, stoppable, never outliving us ------------------------------


def dvc(args: list[str], cwd: Path, env: dict, log: Path | None = None, stop=lambda: False) -> int:
    """Run `dvc ARGS` (with atomic lock writes) in its own process group and wait for it.

    The group is ours alone: a terminal's Ctrl-C reaches only the study command, which
    then interrupts DVC once and waits, so DVC finishes or abandons its write cleanly.
    `stop()` is polled once a second (a worker's way of hearing the coordinator)."""
    cmd = [sys.executable, str(cwd / "tools" / "atomic_dvc.py"), *args]
    out = log.open("a") if log else None
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True
    )
    try:
        while True:
            try:
                return proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                if stop():
                    raise Interrupted("stop requested") from None
    except BaseException:
        _end_group(proc)
        raise
    finally:
        if out:
            out.close()


def _end_group(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGINT to DVC and the stage it runs (DVC's own clean exit), SIGKILL if they linger."""
    if threading.current_thread() is threading.main_thread():
        # A second Ctrl-C must not cut this wait short: it is what keeps dvc.lock whole.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def stage_env(threads: int) -> dict:
    # Stages call `python`: make it this interpreter, so the study runs from an unactivated venv too.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        **os.environ,
        "PATH": path,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
        "VAE_STUDY_PARENT": str(os.getpid()),
    }


# --- the worker's side: one task per run ------------------------------------------


def scratch_dir() -> Path:
    """Where a worker keeps its workspaces ($VAE_STUDY_SCRATCH, else the system's temp folder)."""
    return Path(os.environ.get("VAE_STUDY_SCRATCH") or Path(tempfile.gettempdir()) / "vae-study")


def checkpoints(snapshot: dict, threads: int) -> Path:
    """This machine's checkpoint folder for the project's runs at this thread count (the train stage's
    resume check does not see threads, and another count would not continue a run bit for bit)."""
    path = scratch_dir() / "checkpoints" / f"{snapshot['project']}-{threads}-threads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def workspace(snapshot: dict, bundle: bytes, scratch: Path, threads: int) -> Path:
    """This worker's checkout of the coordinator's snapshot, made once and reused by its later tasks."""
    from distributed import get_worker

    # One workspace per worker process: a worker restarted after a crash gets a new one.
    name = re.sub(r"\W", "_", str(get_worker().id))
    ws = scratch / f"{snapshot['commit'][:12]}-{name}"
    if (ws / ".dvc" / "config.local").exists():
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    (ws.parent / f"{ws.name}.bundle").write_bytes(bundle)
    for cmd in (
        ["init", "-q"],
        ["fetch", "-q", str(ws.parent / f"{ws.name}.bundle"), SNAPSHOT_REF],
        ["checkout", "-q", "--detach", snapshot["commit"]],
    ):
        subprocess.run(["git", *cmd], cwd=ws, check=True, capture_output=True)
    (ws.parent / f"{ws.name}.bundle").unlink()
    # Epoch checkpoints live outside the workspace, in one folder per machine: a run stopped by Ctrl-C,
    # a killed worker or the end of a working day resumes from its last epoch on any worker of this
    # machine, in this study or a later one, if its code, settings and data are the same (the train stage
    # checks, and resumes exactly: tests/test_resume.py); otherwise it starts over.
    (ws / "checkpoints").symlink_to(checkpoints(snapshot, threads), target_is_directory=True)
    # Same machine or a shared file system: use the coordinator's cache, so nothing is copied twice.
    cache = snapshot["cache"] if os.access(snapshot["cache"], os.W_OK) else None
    config = (
        f"[cache]\n    dir = {cache}\n" if cache else ""
    ) + f"[core]\n    remote = study\n['remote \"study\"']\n    url = {snapshot['remote']}\n"
    (ws / ".dvc" / "config.local").write_text(config)  # written last: it marks the workspace complete
    return ws


def worker_repro(stages: list[str]) -> list[str]:
    """The DVC command that computes a run on a worker. check's and download's outputs come from the
    remote in the run's own DVC process (`-s` runs the stages in the order given): one DVC process, and
    one pull of the remote's run-cache, fewer per run."""
    return ["repro", "--pull", "-s", "check", "download", *stages]


def run_task(run: str, stages: list[str], snapshot: dict, bundle: bytes, threads: int) -> dict:
    """Compute one run in this worker's workspace and push it to the remote's run-cache."""
    from distributed import Event

    stop_event = Event(snapshot["stop"])
    # The study is stopping: a run not yet started stays so. (Returned, not raised: Dask would log every
    # waiting run as a failed task.)
    if stop_event.is_set():
        return {"run": run, "stopped": True}
    scratch = scratch_dir()
    t0 = time.monotonic()
    ws = workspace(snapshot, bundle, scratch, threads)
    for tmp in checkpoints(snapshot, threads).glob(f".{run}.pt.*.tmp"):  # a killed stage's half-written one
        tmp.unlink(missing_ok=True)
    seconds = {"workspace": time.monotonic() - t0}
    log = ws / "logs" / "study" / f"{run}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"# {run} on {socket.gethostname()}\n")
    env = stage_env(threads)
    steps = (
        ("compute", worker_repro(stages)),
        ("push", ["push", "--run-cache", *stages]),
    )
    for step, args in steps:
        start = time.monotonic()
        try:
            rc = dvc(args, ws, env, log, stop=stop_event.is_set)
        except Interrupted:  # its DVC has exited; the epoch checkpoint stays for the next study
            return {"run": run, "stopped": True}
        if rc:
            raise RuntimeError(
                f"{run}: `dvc {' '.join(args)}` failed on {socket.gethostname()}:\n" + log.read_text()[-3000:]
            )
        seconds[step] = time.monotonic() - start
    return {
        "run": run,
        "host": socket.gethostname(),
        "seconds": seconds,
        "log": log.read_text(),
        "tensorboard": pack(ws / "logs" / run),
    }


def pack(folder: Path) -> bytes:
    """A run's TensorBoard logs as a tar: scratch outside DVC (they hold wall-clock times), so they
    travel with the task's result instead of through the remote."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        if folder.is_dir():
            tar.add(folder, arcname=".")
    return buf.getvalue()


def unpack(blob: bytes, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")


# --- the coordinator's side --------------------------------------------------------


def plan(params: dict, only: str | None = None) -> list[tuple[str, list[str]]]:
    """(run, the stages a worker computes for it), longest first."""
    order = sorted(runs(params), key=lambda r: -COST.get(r[1], 0))
    return [
        (run_name(*r), [f"train@{run_name(*r)}", f"evaluate@{run_name(*r)}"])
        for r in order
        if not only or re.search(only, run_name(*r))
    ]


def minutes(run: str, params: dict) -> float:
    """Expected minutes of a run on one thread of the development machine, scaled to params' size."""
    recipe, family = run.split("-")[:2]
    images = params["data"]["train_subset"] or 60000
    total = COST.get(family, 10) * params["train"]["epochs"] / 50 * images / 60000
    if train_config(params, recipe, family, 0)["binarize"] != "none":
        ev = params["eval"]
        total += NLL_COST.get(family, 10) * (ev["nll_images"] or 10000) / 10000 * ev["iw_samples"] / 1000
    return total


def calibrate(params: dict, threads: int) -> float:
    """This machine's time per training step over ours (CALIBRATION_S): a few steps of every family, timed."""
    import torch

    from vae.losses import negative_elbo, training_objective
    from vae.models import build_model

    torch.set_num_threads(threads)
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    here = ours = 0.0
    for family in params["families"]:
        model = build_model(family, 2, params["models"][family])
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        for step in range(CALIBRATION_STEPS + 2):  # two steps of warm-up, not timed
            if step == 2:
                start = time.perf_counter()
            opt.zero_grad()
            training_objective(negative_elbo(model, x)).backward()
            opt.step()
        here += time.perf_counter() - start
        ours += CALIBRATION_S[family]
    return here / ours


def calibrate_workers(client, params: dict, threads: int) -> float:
    """calibrate() on every worker at once, so the steps share the machine as the runs will: two 1-thread
    runs on the 2-core machine each take about 1.5x as long as one alone (benchmarks/study_runs.jsonl)."""

    def warm_up(root: str) -> None:  # imports and torch's first optimizer, untimed, before the timed steps
        sys.path.insert(0, root)
        import torch

        from vae.models import build_model

        torch.optim.Adam(build_model("simple_mlp", 2, params["models"]["simple_mlp"]).parameters())

    # One task per worker; a worker that dies meanwhile leaves its task to another, not waiting forever.
    each = {"pure": False, "allow_other_workers": True}
    workers = list(client.scheduler_info()["workers"])
    client.gather([client.submit(warm_up, str(ROOT), workers=[w], **each) for w in workers])
    ratios = client.gather([client.submit(calibrate, params, threads, workers=[w], **each) for w in workers])
    return sum(ratios) / len(ratios)


def estimate(todo, args, params: dict, client=None) -> str:
    """What the runs will cost: our machine's minutes (COST) scaled by a calibration here, on the embedded
    cluster's workers when there is one (in this process otherwise)."""
    total = sum(minutes(run, params) for run, _ in todo)
    if args.scheduler:
        return (
            f"about {duration(total)} of training (and likelihood evaluation) at one thread on our 2-core "
            "machine, shared by the cluster's workers"
        )
    t0 = time.monotonic()
    ratio = calibrate_workers(client, params, args.threads) if client else calibrate(params, args.threads)
    total *= ratio
    where = f"on {args.workers} workers at once" if client else "here"
    return (
        f"about {duration(total)} of training (and likelihood evaluation) for one worker of {args.threads} "
        f"thread(s) here, so {duration(total / args.workers)} on {args.workers} (a calibration of "
        f"{time.monotonic() - t0:.0f} s {where}: a training step takes {ratio:.2f}x as long as on our idle "
        "2-core machine)"
    )


def hold_study_lock() -> object:
    """One study per checkout: a second one is told who holds it, instead of failing inside DVC."""
    path = ROOT / ".dvc" / "tmp" / "study.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = path.open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        sys.exit(
            f"study: another study command (pid {holder}) is running in this checkout; wait for it, "
            f"or stop it with `kill -INT {holder}` (it stops cleanly)"
        )
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def dvc_text(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, capture_output=True, text=True).stdout


def remote_url(name: str | None) -> str:
    """The URL of the remote the study shares results through, setting up the local default if none."""
    name = name or dvc_text("config", "core.remote").strip()
    if not name:
        DEFAULT_REMOTE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "-f", "study-local", str(DEFAULT_REMOTE)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        say(
            f"no DVC remote configured: results go to {DEFAULT_REMOTE} (.dvc/config.local, remote "
            "'study-local'); add your own with `dvc remote add -d NAME URL`"
        )
        return str(DEFAULT_REMOTE)
    url = dvc_text("config", f"remote.{name}.url").strip()
    if not url:
        sys.exit(f"study: no DVC remote named {name!r}; `dvc remote list` shows the configured ones")
    # A relative local remote is relative to .dvc/: workers need it absolute.
    if "://" not in url and not os.path.isabs(url):
        url = str((ROOT / ".dvc" / url).resolve())
    return url


def in_checkout(remote: str) -> Path | None:
    """The remote's folder relative to the checkout, where it lies inside it (the project's dvc-remote/)."""
    if "://" in remote or not Path(remote).resolve().is_relative_to(ROOT):
        return None
    return Path(remote).resolve().relative_to(ROOT)


def make_snapshot(remote: str) -> tuple[dict, bytes]:
    """The checkout's files as DVC sees them now (every file git does not ignore, committed or not),
    as one root commit in a git bundle."""
    with tempfile.TemporaryDirectory() as tmp:
        # A scratch index leaves the user's alone; a fixed author works where git has none configured.
        env = {
            **os.environ,
            "GIT_INDEX_FILE": f"{tmp}/index",
            "GIT_AUTHOR_NAME": "vae study",
            "GIT_AUTHOR_EMAIL": "study@localhost",
            "GIT_COMMITTER_NAME": "vae study",
            "GIT_COMMITTER_EMAIL": "study@localhost",
        }

        def git(*args):
            return subprocess.run(
                ["git", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
            ).stdout.strip()

        # A remote kept inside the checkout (the project's own, dvc-remote/) reaches workers by its
        # URL, not in the snapshot.
        inside = in_checkout(remote)
        git("add", "-A", "--", ".", *([f":(exclude){inside}"] if inside else []))
        commit = git("commit-tree", git("write-tree"), "-m", "vae study snapshot")
        git("update-ref", SNAPSHOT_REF, commit)
        git("bundle", "create", "-q", f"{tmp}/s.bundle", SNAPSHOT_REF)
        bundle = Path(tmp, "s.bundle").read_bytes()
    cache = dvc_text("cache", "dir").strip() or str(ROOT / ".dvc" / "cache")
    # `stop`: this study's own stop event (another study on a shared scheduler has its own);
    # `project`: which checkout's runs these are, for the machine's checkpoint folder.
    project = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    stop = f"vae-study-stop-{uuid.uuid4().hex}"
    return {"commit": commit, "remote": remote, "cache": cache, "project": project, "stop": stop}, bundle


def to_compute(todo: list[tuple[str, list[str]]], env: dict) -> list[tuple[str, list[str]]]:
    """The runs whose stages are not up to date here (DVC's own status). Of the whole pipeline: DVC
    resolves it once per target named (144 targets took 128 CPU-s, none 3)."""
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    try:
        changed = json.loads(status.stdout) if status.returncode == 0 else None
    except json.JSONDecodeError:
        changed = None
    if not isinstance(changed, dict):  # no answer: offer every run (a worker's repro skips what is done)
        return todo
    return [(run, st) for run, st in todo if any(s in changed for s in st)]


def connect(args):
    import dask
    from distributed import Client, LocalCluster
    from distributed.security import Security

    dask.config.set(DASK_CONFIG)  # the embedded cluster's workers get it through their nanny
    if args.scheduler:
        security = None
        if args.tls_ca_file:
            security = Security(
                tls_ca_file=args.tls_ca_file,
                tls_client_cert=args.tls_cert,
                tls_client_key=args.tls_key,
                require_encryption=True,
            )
        return Client(args.scheduler, security=security), None
    # Loopback only: a Dask scheduler runs whatever code it is sent.
    cluster = LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:8787" if args.dashboard else None,
        resources={"GPU": 1} if args.gpus_per_run else None,
    )
    return Client(cluster), cluster


def remove_workspaces(commit: str) -> None:
    scratch = scratch_dir()
    for ws in scratch.glob(f"{commit[:12]}-*"):
        shutil.rmtree(ws, ignore_errors=True)


def duration(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{max(minutes, 1):.0f} min"


def progress(todo, done: list[dict], failed: dict, t0: float, params: dict) -> str:
    """[runs finished/total, elapsed, remaining at the pace so far, weighted by each run's expected cost]"""
    finished = {r["run"] for r in done} | set(failed)
    spent = sum(minutes(run, params) for run, _ in todo if run in finished)
    left = sum(minutes(run, params) for run, _ in todo if run not in finished)
    elapsed = time.monotonic() - t0
    return (
        f"[{len(finished)}/{len(todo)}, {elapsed / 60:.0f} min elapsed, "
        f"about {elapsed * left / max(spent, 1e-9) / 60:.0f} min left]"
    )


def compute(todo, args, snapshot, bundle, params, headline: str) -> tuple[list[dict], dict[str, str]]:
    """Every run of `todo` on the cluster; (results, {run: why it failed}). A signal stops it (SIGNALLED).
    After a signal, SIGINT and SIGTERM stay ignored: what follows keeps dvc.lock whole."""
    import cloudpickle
    import dask
    from distributed import Event, as_completed, wait

    # A run whose worker dies is retried once; a second death names it (KilledWorker).
    dask.config.set({"distributed.scheduler.allowed-failures": 1})
    # Workers on other machines do not have this file: send the task's code with it.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    client, cluster = connect(args)
    stop = Event(snapshot["stop"], client=client)
    stop.clear()
    done: list[dict] = []
    failed: dict[str, str] = {}
    futures: dict = {}  # filled one by one: a signal at any moment waits for what was submitted

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
            say(f"{run} FAILED twice: logs/study/{run}.log {progress(todo, done, failed, t0, params)}")
            return
        done.append(r)
        write_log(run, r["log"])
        unpack(r["tensorboard"], ROOT / "logs" / run)
        s = r["seconds"]
        record(run_record(r, workers, args.threads, started))
        say(
            f"{run} done on {r['host']} in {s['compute'] / 60:.1f} min "
            f"(+{s['workspace'] + s['push']:.0f} s workspace and push) "
            f"{progress(todo, done, failed, t0, params)}"
        )

    try:
        say(f"{headline}: {estimate(todo, args, params, None if args.scheduler else client)}")
        workers = len(client.scheduler_info()["workers"])
        t0 = time.monotonic()
        started = utc_now()
        data = client.scatter(bundle, broadcast=True)
        for i, (run, stages) in enumerate(todo):
            future = client.submit(
                run_task,
                run,
                stages,
                snapshot,
                data,
                args.threads,
                key=f"run-{run}",
                priority=len(todo) - i,
                retries=1,
                pure=False,
                resources={"GPU": args.gpus_per_run} if args.gpus_per_run else None,
            )
            futures[future] = run
        say(f"{len(todo)} runs on {workers} workers ({client.scheduler.address})")
        for future in as_completed(futures):
            finished(future, futures[future])
    except (KeyboardInterrupt, Interrupted):
        say("interrupted: stopping every run and waiting for its DVC processes to exit")
        stop.set()
        # Each running task interrupts its DVC (SIGINT, then SIGKILL after 60 s) and returns; the
        # others return at once. Signals meanwhile are ignored: this wait is what keeps dvc.lock whole.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
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
            client.run(remove_workspaces, snapshot["commit"])
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
        "study_started": started,
        "finished": utc_now(),
        "workers": workers,
        "threads": threads,
        "seconds": {k: round(v, 1) for k, v in result["seconds"].items()},
        "epoch_seconds": round(sum(map(float, epochs)), 1),  # of compute; the rest is mostly evaluation
        # A resumed run's seconds are only its last part, a restored one's are DVC restoring it from the
        # run-cache (it finished while an earlier study stopped): study_time.py leaves both out of the means.
        "resumed_after_epoch": int(resumed.group(1)) if resumed else 0,
        "from_run_cache": f"Stage 'train@{result['run']}' is cached - skipping run" in result["log"],
    }


def write_log(run: str, text: str) -> None:
    path = ROOT / "logs" / "study" / f"{run}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# The signals that reached the study: the exception on_signal raises can land inside a library's
# cleanup that swallows every Exception (the cluster's close, after the last run), so this list is
# checked too before the results are assembled.
SIGNALLED: list[str] = []


def on_signal(signum, frame):
    SIGNALLED.append(signal.Signals(signum).name)
    raise Interrupted(SIGNALLED[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", "--lanes", type=int, default=2, help="runs computed at once here (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="an existing Dask scheduler, e.g. tls://HOST:8786, instead of the embedded one",
    )
    ap.add_argument("--tls-ca-file")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
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
    if args.workers < 1 or args.threads < 1:
        ap.error("--workers and --threads must be at least 1")
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
    except (KeyboardInterrupt, Interrupted):
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
    if todo:
        headline = f"{len(todo)} runs to compute ({len(plan(params, args.only)) - len(todo)} up to date)"
        snapshot, bundle = make_snapshot(remote)
        done, failed = compute(todo, args, snapshot, bundle, params, headline)
        if SIGNALLED:
            # The runs that finished are in the run-cache: restore them (never compute) into dvc.lock, so
            # what was done can be committed now, and the next study starts after them.
            stages = dict(todo)
            if done:
                say(f"restoring the {len(done)} finished runs into dvc.lock")
                restore = {**env, "VAE_RESTORE_ONLY": "1"}
                dvc(["repro", "--pull", "-s", *[s for r in done for s in stages[r["run"]]]], ROOT, restore)
            raise Interrupted("stopped")
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
        say(f"failed twice, see logs/study/RUN.log: {', '.join(sorted(failed))}")
        return 1
    if rc:
        say("assembling the results failed (above); no run was recomputed here")
    return rc


if __name__ == "__main__":
    main()
