"""The worker's side of the study: one Dask task computes one run in a workspace of its own.

Workers on other machines have no checkout and no copy of this file: the study sends this module's
code with each task (cloudpickle, by value) and the coordinator's files as a git bundle.
"""

from __future__ import annotations

import io
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SNAPSHOT_REF = "refs/vae-study/snapshot"


class Interrupted(Exception):
    """The study is stopping (a signal reached the coordinator, or its stop event was set)."""


def dvc(args: list[str], cwd: Path, env: dict, log: Path | None = None, stop=lambda: False) -> int:
    """Run `dvc ARGS` (with atomic lock writes) in its own process group and wait for it.

    The group is ours alone: a terminal's Ctrl-C reaches only the study command, which then
    interrupts DVC once and waits, so DVC finishes or abandons its write cleanly. `stop()` is
    polled once a second while DVC runs: the coordinator's signal flag, or a worker's way of hearing it."""
    if stop():
        raise Interrupted("stop requested")
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
        end_group(proc)
        raise
    finally:
        if out:
            out.close()


def end_group(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGINT to DVC and the stage it runs (DVC's own clean exit), SIGKILL if they linger.
    A second Ctrl-C cannot cut this wait short: the study's signal handler only sets a flag."""
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
    # Dask's nanny gives its worker MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-environ), so a
    # long-lived worker hands freed memory back. A training process that inherits it hands back and faults in
    # its activations every step: an IWAE run spent 31% of its CPU time in the kernel (61M page faults in
    # 14 min). glibc's own default keeps them; the figures do not change (docs/speed.md).
    inherited = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    return {
        **inherited,
        "PATH": path,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
        "VAE_STUDY_PARENT": str(os.getpid()),
    }


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
    """Compute one run in this worker's workspace and push it to the remote's run-cache.

    A run that fails raises, with its log: the scheduler does not retry it (the same code would fail
    the same way); only a lost worker's run is retried (distributed.scheduler.allowed-failures)."""
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
        "cpu": cpu(),
        "seconds": seconds,
        "log": log.read_text(),
        "tensorboard": pack(ws / "logs" / run),
    }


def cpu(cpuinfo: str | None = None) -> str:
    """The processor a run trained on, as far as its bytes depend on it: convolutions go through oneDNN,
    whose kernels are generated for the widest vector instructions the CPU has. 8f41608's own code gives
    other conv bytes on a Zen 3 (AVX2) machine than on the machines that trained its runs, and the
    same MLP bytes (docs/reproducibility.md): the record says which kind of machine made each run."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux
            return platform.processor() or platform.machine()
    first = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in cpuinfo.split("\n\n")[0].splitlines())
    )
    flags = set(first.get("flags", "").split())
    widest = next((isa for isa in ("avx512f", "avx2", "avx", "sse2") if isa in flags), platform.machine())
    return f"{first.get('model name', '?')} (family {first.get('cpu family', '?')}, model {first.get('model', '?')}), {widest}"


def remove_workspaces(commit: str) -> None:
    for ws in scratch_dir().glob(f"{commit[:12]}-*"):
        shutil.rmtree(ws, ignore_errors=True)


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
