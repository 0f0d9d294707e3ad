"""The study on Dask, for real at smoke size: workers compute, DVC's run-cache and a remote bring the
results home, and faults (a killed worker, Ctrl-C, SIGTERM, a second study) lose nothing."""

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import psutil
import pytest
from ruamel.yaml import YAML

from tests.smoke import DVC, ROOT, SMOKE, commit, make_project, outs, run_study, sh, study_env

sys.path.insert(0, str(ROOT / "tools"))
import atomic_dvc  # noqa: E402
import engine_checkout  # noqa: E402
import engine_plan  # noqa: E402
import engine_worker  # noqa: E402
import study  # noqa: E402

from benchmarks import study_time  # noqa: E402

# Two runs (seeds 0 and 1 of one cell of the smoke matrix): enough for two workers, cheap to repeat.
PARAMS = {**SMOKE, "recipes": ["study"], "families": ["simple_mlp"], "latent_dims": [2]}
RUNS = ["study-simple_mlp-2-0", "study-simple_mlp-2-1"]


def new_project(tmp: Path, mirror: str, params: dict = PARAMS) -> tuple[Path, dict]:
    proj = tmp / "proj"
    proj.mkdir(parents=True)
    env = study_env(make_project(proj, mirror, params), tmp)
    return proj, env


def ours_alive(tmp: Path) -> list[str]:
    """Processes of ours still running in this test's folders (DVC, stages, workers)."""
    alive = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if str(tmp) in " ".join(p.info["cmdline"] or []) + (p.info["cwd"] or ""):
                alive.append(" ".join(p.info["cmdline"]))
        except psutil.Error:
            pass
    return alive


# Session, not module: pytest-xdist interleaves this module's tests with others', and pytest tears a
# module fixture down whenever the next test is in another module (it was built three times, 30 s each).
@pytest.fixture(scope="session")
def serial(tmp_path_factory, data_mirror):
    """The same two runs by a plain serial `dvc repro`: what the study must reproduce."""
    proj, env = new_project(tmp_path_factory.mktemp("serial"), data_mirror)
    sh(DVC, "repro", cwd=proj, env=env)
    return proj, env, outs(proj)


def test_identical_runs_write_identical_files(serial):
    """What the README's reproducibility claim means, checked: on one machine and thread count,
    a forced rerun of every stage leaves every output hash in dvc.lock unchanged."""
    proj, env, first = serial
    sh(DVC, "repro", "--force", cwd=proj, env=env)
    # check's 2 (params.ok, settings), download, 2 x (model, history), 2 x (metrics, details), plot's folder, compare's 6
    assert outs(proj) == first and len(first) == 18


def test_the_study_on_two_workers_writes_what_a_serial_repro_writes(smoke_study, serial):
    _, proj, env, out = smoke_study
    # The same runs, computed by workers in the smoke matrix and serially here: the same bytes.
    studied = outs(proj)
    shared = {k: v for k, v in serial[2].items() if k[0].startswith(("train@", "evaluate@", "plot@"))}
    assert len(shared) == 9 and {k: studied.get(k) for k in shared} == shared
    n = len([k for k in studied if k[0].startswith(("train@", "train_subset@"))]) // 2  # the subset recipe's too
    assert f"study: {n}/{n} runs computed" in out
    assert re.search(
        rf"study: {n} runs to compute \(0 up to date\): about .* on 2 workers at once: a training step", out
    )
    # One record per computed run: what benchmarks/study_time.py sums into the README's wall time.
    records = [json.loads(line) for line in (proj / "logs" / "study" / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["run"] for r in records) == sorted(
        {k[0].split("@")[1] for k in studied if k[0].startswith(("train@", "train_subset@"))}
    )
    assert {(r["workers"], r["threads"], r["resumed_after_epoch"]) for r in records} == {(2, 1, 0)}
    assert {r["cpu"] for r in records} == {engine_worker.cpu()}  # the kind of machine each run's bytes came from
    assert all(0 < r["epoch_seconds"] < r["seconds"]["compute"] for r in records)
    assert f"| all | | {n} |" in study_time.summary(records)
    # The coordinator restored both stages of each run from the run-cache; it ran no training.
    for run in RUNS:
        for stage in ("train", "evaluate"):
            assert f"Stage '{stage}@{run}' is cached - skipping run" in out
        assert f"Running stage 'train@{run}'" in (proj / "logs" / "study" / f"{run}.log").read_text()
    assert "Running stage 'train@" not in out and "Running stage 'compare'" in out
    assert "up to date" in sh(DVC, "status", cwd=proj, env=env)
    # Workers' workspaces are removed when the study ends; the machine's checkpoint folder stays, empty.
    scratch = proj.parent / "scratch"
    assert [p.name for p in scratch.iterdir()] == ["checkpoints"] and not list(scratch.rglob("*.pt"))


def test_a_second_study_computes_nothing(smoke_study):
    _, proj, env, _ = smoke_study
    before = outs(proj)
    r = run_study(proj, env)
    assert r.returncode == 0 and "runs on" not in r.stdout and outs(proj) == before, r.stdout + r.stderr


def test_a_clone_gets_every_result_from_the_projects_remote_in_git(smoke_study, tmp_path, monkeypatch):
    """The project's default remote is dvc-remote/ in the checkout, committed with dvc.lock: a fresh
    clone, with no other remote and no data mirror, pulls every result from it, the study command
    there computes nothing (how a study committed part by part goes on), and a pulled model evaluates
    to the committed numbers. Workers never receive the remote in their snapshot."""
    _, proj, env, _ = smoke_study
    config = (ROOT / ".dvc" / "config").read_text()
    assert "remote = project" in config and "url = ../dvc-remote" in config
    commit(proj, "study")
    first = tmp_path / "first"
    sh("git", "clone", "-q", str(proj), str(first), cwd=tmp_path)
    xdg = str(Path(env["XDG_CACHE_HOME"]) / "vae-study" / "remote")  # where the smoke study pushed
    sh(DVC, "remote", "add", "--local", "-d", "shared", xdg, cwd=first)
    sh(DVC, "pull", cwd=first, env=env)
    (first / ".dvc" / "config.local").unlink()
    (first / ".dvc" / "config").write_text(config)
    sh(DVC, "push", "--run-cache", cwd=first, env=env)
    commit(first, "the study and its remote")
    assert sh("git", "ls-files", "dvc-remote", cwd=first), "the remote's objects are in git"

    monkeypatch.setattr(engine_checkout, "ROOT", first)
    snapshot, _ = study.make_snapshot(str(first / "dvc-remote"))
    tree = sh("git", "ls-tree", "-r", "--name-only", snapshot["commit"], cwd=first).split()
    assert "dvc.yaml" in tree and not [f for f in tree if f.startswith("dvc-remote/")]

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(first), str(clone), cwd=tmp_path)
    # No data mirror and an empty user cache: everything, the data included, comes from dvc-remote/.
    bare = study_env({k: v for k, v in env.items() if k != "VAE_DATA_MIRROR"}, tmp_path / "fresh")
    sh(DVC, "pull", cwd=clone, env=bare)
    for run in RUNS:
        assert (clone / "models" / f"{run}.pt").read_bytes() == (proj / "models" / f"{run}.pt").read_bytes()
    assert "up to date" in sh(DVC, "status", cwd=clone, env=bare)
    r = run_study(clone, bare)
    assert r.returncode == 0 and "runs to compute" not in r.stdout and "Running stage" not in r.stdout, r.stdout
    assert outs(clone) == outs(proj)
    # The pulled model evaluates here, without retraining, to the same numbers.
    metrics = (clone / "metrics" / "runs" / f"{RUNS[0]}.json").read_text()
    sh(DVC, "repro", "-f", "-s", f"evaluate@{RUNS[0]}", cwd=clone, env=bare)
    assert (clone / "metrics" / "runs" / f"{RUNS[0]}.json").read_text() == metrics


def killed_worker_pid(tmp: Path, timeout: float = 300) -> int:
    """The Dask worker process running a training stage in this test's scratch folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["cmdline", "cwd"]):
            try:
                if "stages.train" in " ".join(p.info["cmdline"] or []) and str(tmp) in (p.info["cwd"] or ""):
                    dvc = p.parent()  # tools/atomic_dvc.py (or a shell, then it)
                    while "atomic_dvc" not in " ".join(dvc.cmdline()):
                        dvc = dvc.parent()
                    return dvc.parent().pid
            except psutil.Error:
                pass
        time.sleep(0.2)
    raise AssertionError("no training stage started")


def start_study(proj: Path, env: dict, workers: int = 2) -> subprocess.Popen:
    """The study command in the background, its output (stdout and stderr) on one pipe."""
    return subprocess.Popen(
        [sys.executable, "tools/study.py", "--workers", str(workers)],
        cwd=proj,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_worker_killed_mid_run_is_retried_and_the_study_completes(tmp_path, data_mirror, serial):
    proj, env = new_project(tmp_path, data_mirror)
    proc = start_study(proj, env)
    os.kill(killed_worker_pid(tmp_path), signal.SIGKILL)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    assert outs(proj) == serial[2]
    assert not ours_alive(tmp_path), "the killed worker's DVC and stage died with it"


def wait_for_line(proc: subprocess.Popen, text: str, lines: list[str]) -> None:
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never printed:\n{''.join(lines)[-3000:]}")


@pytest.mark.parametrize(
    "sig, moment",
    [
        (signal.SIGTERM, "done on"),  # while a worker computes the other run
        (signal.SIGINT, "is cached - skipping"),  # while the coordinator restores runs and writes dvc.lock
    ],
)
def test_a_signal_stops_everything_and_the_same_command_finishes_the_study(tmp_path, data_mirror, serial, sig, moment):
    proj, env = new_project(tmp_path, data_mirror)
    proc = start_study(proj, env)
    lines = []
    wait_for_line(proc, moment, lines)
    proc.send_signal(sig)
    out = "".join(lines) + proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "study: stopped" in out, out[:3000] + "\n[...]\n" + out[-1500:]
    assert "Compute Failed" not in out, "a stopped run is not a failed Dask task"
    assert not ours_alive(tmp_path), "no DVC process or stage outlives the study command"
    if (proj / "dvc.lock").exists():
        lock = YAML(typ="safe").load((proj / "dvc.lock").read_text())  # whole, parseable
        if moment == "done on":  # the run that finished is in dvc.lock, ready to commit
            run = re.search(r"study: (\S+) done on", out).group(1)
            assert {f"train@{run}", f"evaluate@{run}"} <= set(lock["stages"]), out[-3000:]
    r = run_study(proj, env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert outs(proj) == serial[2]


def test_runs_stopped_mid_training_resume_from_their_last_epoch_in_the_next_study(tmp_path, data_mirror):
    """The end of a working day: Ctrl-C with one run training and one waiting (one worker), and the next
    day's study goes on from the training run's last epoch."""
    proj, env = new_project(tmp_path, data_mirror, {**PARAMS, "train.epochs": 20})
    machine = tmp_path / "scratch" / "checkpoints"  # the machine's checkpoints, outside any workspace
    proc = start_study(proj, env, workers=1)
    deadline = time.monotonic() + 300
    while not list(machine.rglob("*.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no epoch checkpoint was written"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "study: stopped" in out, out[-3000:]
    assert "Compute Failed" not in out, "a stopped or waiting run is not a failed Dask task"
    kept = {p.stem for p in machine.rglob("*.pt")}
    assert kept == {RUNS[0]} and not list((proj / "models").glob("*.pt"))
    r = run_study(proj, env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for run in RUNS:
        log = (proj / "logs" / "study" / f"{run}.log").read_text()
        assert bool(re.search(rf"{run}: resuming after epoch \d+ ", log)) == (run in kept), log[-2000:]
        assert len((proj / "metrics" / "history" / f"{run}.csv").read_text().splitlines()) == 1 + 20
    assert not list(machine.rglob("*.pt"))  # every run is complete: nothing left to resume
    stop, *done = [json.loads(line) for line in (proj / "logs" / "study" / "runs.jsonl").read_text().splitlines()]
    assert stop["unfinished"] == 2 and {d["run"] for d in done if d["resumed_after_epoch"]} == kept


def test_a_signal_during_the_lock_write_leaves_the_previous_lock(tmp_path, monkeypatch):
    """The moment Ctrl-C emptied dvc.lock, made reproducible: the write is interrupted half-way."""
    from dvc.utils.serialize import _yaml

    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  a:\n    cmd: x\n")
    before = lock.read_text()

    def half_then_interrupt(data, stream):
        stream.write("schema: '2.0'\nsta")
        raise KeyboardInterrupt

    monkeypatch.setattr(_yaml, "_dump", half_then_interrupt)
    atomic_dvc.patch()
    with pytest.raises(KeyboardInterrupt):
        with _yaml.modify_yaml(lock) as d:
            d["stages"]["b"] = {"cmd": "y"}
    assert lock.read_text() == before and os.listdir(tmp_path) == ["dvc.lock"]


def test_a_signal_during_the_rwlock_write_leaves_the_previous_one(tmp_path, monkeypatch):
    """DVC's own lock-state file, written the same way: half-written, every later DVC command failed."""
    import json

    from dvc import rwlock
    from dvc.fs import localfs

    (tmp_path / "rwlock").write_text('{"read": {}, "write": {}}')

    def half_then_interrupt(obj, stream):
        stream.write('{"read": {"a')
        raise KeyboardInterrupt

    atomic_dvc.patch()
    monkeypatch.setattr(json, "dump", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with rwlock._edit_rwlock(str(tmp_path), localfs, False) as lock:
            lock["read"]["x"].append({"pid": 1, "cmd": "dvc repro"})
    assert (tmp_path / "rwlock").read_text() == '{"read": {}, "write": {}}'


def test_a_second_study_command_names_the_one_that_holds_the_checkout(tmp_path, data_mirror):
    proj, env = new_project(tmp_path, data_mirror)
    path = proj / ".dvc" / "tmp" / "study.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("4242")
        f.flush()
        r = run_study(proj, env)
    assert r.returncode == 1 and r.stderr.strip() == (
        "study: another study command (pid 4242) is running in this checkout; wait for it, "
        "or stop it with `kill -INT 4242` (it stops cleanly)"
    )


def test_workers_on_other_machines_are_refused_the_local_default_remote(tmp_path, data_mirror):
    proj, env = new_project(tmp_path, data_mirror)
    r = run_study(proj, env, "--scheduler", "tcp://127.0.0.1:1", "--insecure")
    assert r.returncode == 1 and "cannot reach the remote" in r.stderr and not (proj / "dvc.lock").exists()


def test_an_unreachable_scheduler_is_one_line_before_any_dvc_work(tmp_path, data_mirror):
    proj, env = new_project(tmp_path, data_mirror)
    sh(DVC, "remote", "add", "--local", "-d", "shared", str(tmp_path / "shared"), cwd=proj)
    r = run_study(proj, env, "--scheduler", "tcp://127.0.0.1:1", "--insecure")
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr == (
        "study: --scheduler tcp://127.0.0.1:1: connection refused: no scheduler listens there; check the address and port\n"
    )
    assert not (proj / "dvc.lock").exists()


def test_the_embedded_cluster_listens_on_loopback_only_and_its_workers_run_lean():
    client, cluster = study.connect(Namespace(scheduler=None, workers=2, dashboard=True, gpus_per_run=0))
    try:
        procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = {
            (c.laddr.ip, c.laddr.port)
            for p in procs
            for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert len(listening) >= 4  # the scheduler, its dashboard, each worker and nanny
        assert {ip for ip, _ in listening} <= {"127.0.0.1", "::1"}, listening
        # ...and its workers, which only wait on DVC, spend no CPU on profiling or 20 ms event-loop ticks.
        lean = client.run(lambda dask_worker: ("profile" in dask_worker.periodic_callbacks, dask_worker._tick_interval))
        assert list(lean.values()) == [(False, 1.0)] * 2, lean
    finally:
        client.close()
        cluster.close()


def test_a_returning_experiment_trains_nothing(tmp_path, data_mirror):
    """DVC's run-cache on the train stage: params A, then B, then A again restores A's outputs."""
    proj, env = new_project(
        tmp_path,
        data_mirror,
        {**SMOKE, "recipes": ["study"], "families": ["simple_mlp"], "latent_dims": [2], "seeds": [0]},
    )
    sh(DVC, "repro", "download", cwd=proj, env=env)
    commit(proj, "base")
    run = "study-simple_mlp-2-0"

    def experiment(lr):  # the run's two stages (and what they need): plot@ and compare add nothing here
        out = sh(DVC, "exp", "run", "-S", f"train.lr={lr}", f"evaluate@{run}", cwd=proj, env=env)
        return (
            out,
            (proj / "models" / f"{run}.pt").read_bytes(),
            (proj / "metrics" / "history" / f"{run}.csv").read_text(),
        )

    _, model_a, history_a = experiment(0.005)
    _, model_b, _ = experiment(0.002)
    out, model_again, history_again = experiment(0.005)
    assert model_b != model_a
    for stage in (f"train@{run}", f"evaluate@{run}"):
        assert f"Stage '{stage}' is cached - skipping run" in out
    assert f"Running stage 'train@{run}'" not in out
    assert (model_again, history_again) == (model_a, history_a)


def test_a_run_that_fails_is_named_with_its_log_and_the_others_finish(tmp_path, data_mirror):
    # MPS never exists on Linux: the simple MLP's run fails on whatever worker takes it (the
    # coordinator's check leaves devices to the workers), the deep MLP's run does not.
    proj, env = new_project(
        tmp_path,
        data_mirror,
        {
            **PARAMS,
            "families": ["simple_mlp", "deep_mlp"],
            "seeds": [0],
            "recipe.study": {"families": {"simple_mlp": {"device": "mps"}}},
        },
    )
    r = run_study(proj, env)
    assert r.returncode == 1
    assert "study: failed, see logs/study/RUN.log: study-simple_mlp-2-0" in r.stdout
    assert "no MPS device is available here" in (proj / "logs" / "study" / "study-simple_mlp-2-0.log").read_text()
    assert (proj / "models" / "study-deep_mlp-2-0.pt").exists()  # the other run came home
    assert "Running stage 'compare'" not in r.stdout
    assert not ours_alive(tmp_path)


def test_the_estimate_scales_our_machines_minutes_by_the_calibration(monkeypatch):
    params = study.load_params(ROOT / "params.yaml")
    todo = study.plan(params, only=r"^tuned-simple_mlp-")  # 6 runs of 2.7 min on our machine
    seconds = engine_plan.calibrate(params, 1, params["families"])
    assert set(seconds) == set(params["families"]) and all(0 < s < 60 for s in seconds.values())
    ratios = [seconds[f] / engine_plan.CALIBRATION_S[f] for f in params["families"] if f in engine_plan.CALIBRATION_S]
    assert ratios and all(0 < r < 100 for r in ratios), "a few training steps of every family, timed against ours"
    monkeypatch.setattr(
        engine_plan,
        "calibrate",
        lambda params, threads, families: {f: 2 * engine_plan.CALIBRATION_S[f] for f in families},
    )
    line, _, pace = study.estimate(todo, Namespace(scheduler=None, threads=1, workers=2), params)
    assert pace == 2.0
    assert line.startswith("about 32 min of training") and "so 16 min on 2" in line and "2.00x as long" in line


def test_the_time_left_is_the_runs_left_at_the_pace_of_whole_runs_shared_by_the_workers():
    params = study.load_params(ROOT / "params.yaml")
    todo = engine_plan.plan(params, only=r"^binarized-deep_mlp-")  # 6 runs of one cost, m minutes each
    m = engine_plan.minutes(todo[0][0], params)

    def record(run: str, minutes: float, log: str = "") -> dict:
        result = {
            "run": run,
            "host": "vm",
            "cpu": "AMD EPYC",
            "seconds": {"compute": 60 * minutes, "workspace": 1, "push": 1},
            "log": log,
        }
        return study.run_record(result, 2, 1, "2026-12-07T00:00:00Z")

    def left(records: list[dict], at_once: int = 2) -> float:
        line = engine_plan.progress(todo, records, {}, time.monotonic() - 3600, params, None, 1.5, at_once)
        return float(re.search(r"about (\d+) min left", line).group(1))

    first, second, third = (run for run, _ in todo[:3])
    # The estimate's pace (1.5) until a run has finished whole; the hour of wall time so far counts for nothing.
    assert left([]) == pytest.approx(1.5 * 6 * m / 2, abs=1)
    resumed = record(first, 0.2 * m, f"{first}: resuming after epoch 40 from checkpoints/{first}.pt")
    restored = record(second, 0.01 * m, f"Stage 'train@{second}' is cached - skipping run")
    assert left([resumed, restored]) == pytest.approx(1.5 * 4 * m / 2, abs=1)
    # A whole run at twice its expected minutes: the other 3 will take twice theirs, 2 at a time.
    assert left([resumed, restored, record(third, 2 * m)]) == pytest.approx(2 * 3 * m / 2, abs=1)
    assert left([resumed, restored, record(third, 2 * m)], at_once=3) == pytest.approx(2 * 3 * m / 3, abs=1)


def test_dry_prints_each_runs_worker_command_and_takes_nothing(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["study.py", "--dry", "--only", "^tuned-simple_mlp-1-"])
    monkeypatch.setattr(study, "hold_study_lock", lambda: pytest.fail("--dry must not take the checkout"))
    study.main()
    runs = [f"tuned-simple_mlp-1-{seed}" for seed in study.load_params(ROOT / "params.yaml")["seeds"]]
    assert capsys.readouterr().out.splitlines() == [
        f"{r}: dvc repro --pull -s check download train@{r} evaluate@{r}" for r in runs
    ]


@pytest.mark.parametrize("rc, stdout", [(1, ""), (0, ""), (0, "not json"), (0, "{}")])
def test_runs_up_to_date_only_when_dvc_status_says_so(monkeypatch, rc, stdout):
    todo = study.plan(study.load_params(ROOT / "params.yaml"), only=r"^tuned-simple_mlp-1-")
    answer = subprocess.CompletedProcess([], rc, stdout=stdout, stderr="")
    monkeypatch.setattr(engine_checkout.subprocess, "run", lambda *a, **k: answer)
    assert study.to_compute(todo, {}) == ([] if stdout == "{}" else todo)


def test_a_signal_during_a_librarys_cleanup_still_stops_the_study(monkeypatch):
    """A SIGTERM that lands in the cluster's close, after the last run, inside a handler that catches every
    Exception: the study must still stop (restore what finished, assemble nothing) and not go on to plots
    and compare as if nobody had asked. The handler raises nothing there to swallow: it sets STOP."""
    params = study.load_params(ROOT / "params.yaml")
    todo = study.plan(params, only=r"^tuned-simple_mlp-1-")
    calls: list[list[str]] = []
    monkeypatch.setattr(study, "remote_url", lambda remote: "/nowhere")
    monkeypatch.setattr(study, "dvc", lambda argv, cwd, env, **kw: calls.append(argv) or 0)
    monkeypatch.setattr(study, "to_compute", lambda todo, env: todo)
    monkeypatch.setattr(study, "make_snapshot", lambda remote: ({}, b""))

    def compute(todo, *rest):
        try:  # a library's cleanup: `except Exception: pass`
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except Exception:
            pass
        return [{"run": run, "seconds": {"compute": 60.0}} for run, _ in todo], {}

    monkeypatch.setattr(study, "compute", compute)
    previous = signal.signal(signal.SIGTERM, study.on_signal)
    try:
        with pytest.raises(study.Interrupted):
            study.study(Namespace(remote=None, scheduler=None, only=None), params, todo, {})
    finally:
        signal.signal(signal.SIGTERM, previous)
        study.STOP.clear()
    restored = [c for c in calls if c[:3] == ["repro", "--pull", "-s"]]
    assert restored and "compare" not in restored[-1], "the finished runs restored into dvc.lock, nothing more"
    assert ["repro", "--pull"] not in calls, "no assembly after a stop"
