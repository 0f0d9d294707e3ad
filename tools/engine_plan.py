"""Planning the study: which runs, in which order (longest first), and what they will cost here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae.config import run_name, runs, train_config  # noqa: E402
from vae.params import stage  # noqa: E402

# Minutes per 50-epoch run at one thread on the 2-core development machine (README, Speed);
# only the order matters: the longest runs start first so no worker is left with one at the end.
COST = {"residual": 27, "conv": 14, "deep_mlp": 4.5, "simple_mlp": 2.7}
# A binarized run's evaluation adds the IW bound on all 10,000 test images at K=1000 (minutes at one
# thread, extrapolated from 500 images; docs/speed.md).
NLL_COST = {"residual": 19, "conv": 11, "deep_mlp": 2.5, "simple_mlp": 1.7}
# An IWAE run's training step against the ELBO's at K = 20 (docs/speed.md, benchmarks/iwae_cost.py); other K
# are interpolated from K = 1 (the ELBO's cost), which puts K = 5 within 0.2x of its measured ratio for the MLPs.
IWAE_RATIO_K20 = {"residual": 12.7, "conv": 20.3, "deep_mlp": 10.9, "simple_mlp": 6.9, "davidson_mlp": 10.7}
# Seconds for CALIBRATION_STEPS training steps (batch 128, z=2) of each family at one thread on the same
# machine, idle (calibrate(); the median of 3 on 2026-12-05): the estimate scales COST by how long they take here.
CALIBRATION_STEPS = 10
CALIBRATION_S = {"residual": 0.75, "conv": 0.32, "deep_mlp": 0.15, "simple_mlp": 0.08}
# A family with no measured cost (a new architecture) is costed from its own calibration steps at the rate
# the measured families have: about 37 minutes of a 50-epoch run, and 26 of IW bound, per second of steps.
MINUTES_PER_STEP_S = sum(COST.values()) / sum(CALIBRATION_S.values())
NLL_MINUTES_PER_STEP_S = sum(NLL_COST.values()) / sum(CALIBRATION_S.values())


def family(run: str) -> str:
    return run.split("-")[1]


def costs(families, steps: dict[str, float] | None = None) -> dict[str, tuple[float, float]]:
    """(minutes of a run, minutes of its IW bound) per family, on our machine. A family with no measured
    cost gets one from its own timed steps (`steps`, seconds on our machine) where there are some, else the
    costliest measured family's, so that it starts among the first."""
    cost = {}
    for f in families:
        if f in COST:
            cost[f] = (COST[f], NLL_COST[f])
        elif steps and f in steps:
            cost[f] = (steps[f] * MINUTES_PER_STEP_S, steps[f] * NLL_MINUTES_PER_STEP_S)
        else:
            cost[f] = (max(COST.values()), max(NLL_COST.values()))
    return cost


def minutes(run: str, params: dict, cost: dict[str, tuple[float, float]] | None = None) -> float:
    """Expected minutes of a run on one thread of the development machine, scaled to params' size."""
    recipe, fam = run.split("-")[:2]
    run_cost, nll_cost = (cost or costs([fam]))[fam]
    images = params["data"]["train_subset"] or 60000
    settings = train_config(params, recipe, fam, 0)
    total = run_cost * params["train"]["epochs"] / 50 * images / 60000
    if settings["objective"] == "iwae":
        ratio = IWAE_RATIO_K20.get(fam, max(IWAE_RATIO_K20.values()))
        total *= 1 + (ratio - 1) * (settings["iw_train_samples"] - 1) / 19
    if settings["binarize"] != "none":
        ev = params["eval"]
        total += nll_cost * (ev["nll_images"] or 10000) / 10000 * ev["iw_samples"] / 1000
    return total


def plan(params: dict, only: str | None = None, cost=None) -> list[tuple[str, list[str]]]:
    """(run, the stages a worker computes for it), longest first."""
    cost = cost or costs(sorted({r[1] for r in runs(params)}))
    names = {run_name(*r): r[0] for r in runs(params)}
    return [
        (run, [stage(params, "train", recipe, run), stage(params, "evaluate", recipe, run)])
        for run, recipe in sorted(names.items(), key=lambda item: -minutes(item[0], params, cost))
        if not only or re.search(only, run)
    ]


def calibrate(params: dict, threads: int, families: list[str]) -> dict[str, float]:
    """Seconds for CALIBRATION_STEPS training steps of each family here."""
    import torch

    from vae.losses import negative_elbo, training_objective
    from vae.models import build_model

    torch.set_num_threads(threads)
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    seconds = {}
    for fam in families:
        model = build_model(fam, 2, params["models"][fam])
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        for step in range(CALIBRATION_STEPS + 2):  # two steps of warm-up, not timed
            if step == 2:
                start = time.perf_counter()
            opt.zero_grad()
            training_objective(negative_elbo(model, x)).backward()
            opt.step()
        seconds[fam] = time.perf_counter() - start
    return seconds


def calibrate_workers(client, params: dict, threads: int, families: list[str]) -> dict[str, float]:
    """calibrate() on every worker at once, so the steps share the machine as the runs will: two 1-thread
    runs on the 2-core machine each take about 1.5x as long as one alone (benchmarks/study_runs.jsonl).
    Each times in a process of its own, as a stage would (as_a_stage): a Dask worker's own process
    has its nanny's malloc setting, which made every step 1.5-2x slower than a run's."""
    # One task per worker; a worker that dies meanwhile leaves its task to another, not waiting forever.
    each = {"pure": False, "allow_other_workers": True}
    workers = list(client.scheduler_info()["workers"])
    call = [str(ROOT), "engine_plan:calibrate", [params, threads, families], threads]
    timed = client.gather([client.submit(as_a_stage, *call, workers=[w], **each) for w in workers])
    return {f: sum(t[f] for t in timed) / len(timed) for f in families}


def as_a_stage(root: str, target: str, args: list, threads: int):
    """MODULE:FUNCTION(*args) of the checkout at root, in a process of its own with the environment a stage
    gets on a worker (engine_worker.stage_env); its result, through JSON."""
    import engine_worker

    code = (
        "import importlib, json, sys; args = json.load(sys.stdin); module, _, fn = sys.argv[1].partition(':'); "
        "print(json.dumps(getattr(importlib.import_module(module), fn)(*args)))"
    )
    env = {**engine_worker.stage_env(threads), "PYTHONPATH": os.pathsep.join([root, str(Path(root) / "tools")])}
    r = subprocess.run(
        [sys.executable, "-c", code, target], input=json.dumps(args), env=env, capture_output=True, text=True
    )
    if r.returncode:
        raise RuntimeError(f"{target} failed on a worker: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def estimate(todo, args, params: dict, client=None) -> tuple[str, dict[str, tuple[float, float]], float]:
    """What the runs will cost, each family's cost in our machine's minutes (COST), and the pace here: how
    much longer a step takes on the embedded cluster's workers when there is one (in this process otherwise)
    than on our machine; 1 with --scheduler, where nothing is timed."""
    families = sorted({family(run) for run, _ in todo})
    unmeasured = [f for f in families if f not in COST]
    if args.scheduler:
        cost = costs(families)
        total = sum(minutes(run, params, cost) for run, _ in todo)
        note = f" ({', '.join(unmeasured)}: no measured cost, counted as the costliest family)" if unmeasured else ""
        line = (
            f"about {duration(total)} of training (and likelihood evaluation) at one thread on our 2-core "
            f"machine, shared by the cluster's workers{note}"
        )
        return line, cost, 1.0
    t0 = time.monotonic()
    if client:
        steps = calibrate_workers(client, params, args.threads, families)
    else:
        steps = calibrate(params, args.threads, families)
    measured = [f for f in families if f in CALIBRATION_S]
    # Without a measured family to compare with, this machine counts as ours.
    ratio = sum(steps[f] for f in measured) / sum(CALIBRATION_S[f] for f in measured) if measured else 1.0
    cost = costs(families, {f: s / ratio for f, s in steps.items()})
    total = ratio * sum(minutes(run, params, cost) for run, _ in todo)
    where = f"on {args.workers} workers at once" if client else "here"
    note = f"; {', '.join(unmeasured)}: no measured cost, estimated from its own timed steps" if unmeasured else ""
    line = (
        f"about {duration(total)} of training (and likelihood evaluation) for one worker of {args.threads} "
        f"thread(s) here, so {duration(total / args.workers)} on {args.workers} (a calibration of "
        f"{time.monotonic() - t0:.0f} s {where}: a training step takes {ratio:.2f}x as long as on our idle "
        f"2-core machine{note})"
    )
    return line, cost, ratio


def duration(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{max(minutes, 1):.0f} min"


def progress(todo, records: list[dict], failed: dict, t0: float, params: dict, cost=None, pace=1.0, at_once=1) -> str:
    """[runs finished/total, elapsed, remaining]: the expected minutes of the runs left, shared by the runs at once,
    at the pace of the runs that ran whole in this study (their minutes over their expected minutes; the
    estimate's `pace` until one has). `records` are study.run_record()s of the runs done. The wall time so far is no measure:
    when the first run of two workers finishes, the other is nearly done too, and its work counted nowhere
    (the first ETA of the rerun's fourth sitting said 1929 min, the second, 70 s later, 940)."""
    finished = {r["run"] for r in records} | set(failed)
    left = sum(minutes(run, params, cost) for run, _ in todo if run not in finished)
    # A resumed run's minutes are only its last epochs, a restored one's are DVC restoring it.
    whole = [r for r in records if not r["resumed_after_epoch"] and not r["from_run_cache"]]
    expected = sum(minutes(r["run"], params, cost) for r in whole)
    if whole:
        pace = sum(r["seconds"]["compute"] for r in whole) / 60 / expected
    return (
        f"[{len(finished)}/{len(todo)}, {(time.monotonic() - t0) / 60:.0f} min elapsed, "
        f"about {pace * left / at_once:.0f} min left]"
    )
