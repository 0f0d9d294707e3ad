import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from vae import training
from vae.checkpoints import CheckpointError, load_model, save_model
from vae.data import binarize
from vae.losses import evaluate, negative_elbo
from vae.models import build_model
from vae.training import (
    HISTORY_COLUMNS,
    DeviceError,
    batches,
    bits_generator,
    blew_up,
    epoch_generator,
    kl_weight,
    lr_schedule,
    resolve_device,
    train,
    write_history,
)

SETTINGS = {
    "optimizer": "adam",
    "lr": 1e-3,
    "lr_schedule": "constant",
    "kl_warmup_epochs": 0,
    "free_bits": 0.0,
    "epochs": 2,
    "batch_size": 32,
    "seed": 0,
    "grad_clip": None,
    "logvar_clamp": None,
    "precision": "fp32",
    "channels_last": True,
    "device": "cpu",
    "binarize": "none",
    "objective": "elbo",
    "iw_train_samples": 1,
}
CFG = {"hidden": 16}
RUN = "simple_mlp-2"


def data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g)


def run(tmp_path, settings=SETTINGS, fingerprint="fp", name="ckpt.pt", x=None):
    x = data() if x is None else x
    return train(
        RUN,
        "simple_mlp",
        2,
        CFG,
        settings,
        x,
        data(50, 1),
        checkpoint=tmp_path / name,
        log_dir=tmp_path / "logs",
        eval_seed=1,
        eval_batch_size=25,
        fingerprint=fingerprint,
    )


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """An uninterrupted run from scratch: (model, history)."""
    return run(tmp_path_factory.mktemp("fresh"))


def independent_negative_elbo(model, x, noise):
    """Per-image negative ELBO written out without vae.losses: sigmoid + BCE, and the closed-form
    KL of Kingma & Welling (2014), appendix B."""
    mu, logvar = model.encode(x)
    probs = torch.sigmoid(model.decode(mu + (0.5 * logvar).exp() * noise))
    recon = F.binary_cross_entropy(probs, x, reduction="none").flatten(1).sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return recon + kl


def test_batches_shuffle_and_cover_every_index_once_with_a_short_last_batch():
    parts = batches(10, 4, torch.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    assert torch.cat(parts).tolist() != list(range(10))


def test_identical_runs_write_identical_files(tmp_path, fresh):
    model, history = run(tmp_path, name="again.pt")
    assert model is not fresh[0] and history == fresh[1]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh[0].state_dict().values()))
    write_history(tmp_path / "a.csv", history)
    write_history(tmp_path / "b.csv", fresh[1])
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_text().splitlines()[0] == ",".join(HISTORY_COLUMNS)
    assert history[-1]["test_total"] < history[0]["train_total"]


def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(tmp_path, fresh):
    run(tmp_path, {**SETTINGS, "epochs": 1}, name="part.pt")
    resumed, history = run(tmp_path, name="part.pt")
    assert history == fresh[1]
    assert all(torch.equal(a, b) for a, b in zip(fresh[0].state_dict().values(), resumed.state_dict().values()))


def not_progress(out: str) -> list[str]:
    """stdout less the per-epoch lines."""
    return [line for line in out.splitlines() if not line.startswith(f"{RUN} epoch ")]


def test_checkpoint_of_other_settings_is_set_aside_and_training_starts_over(tmp_path, capsys, fresh):
    # Another seed stands for any change the fingerprint covers: resuming it would give other numbers.
    run(tmp_path, {**SETTINGS, "epochs": 1, "seed": 1}, fingerprint="old")
    capsys.readouterr()
    _, history = run(tmp_path, fingerprint="new")
    assert not_progress(capsys.readouterr().out) == [
        f"{RUN}: starting from scratch: {tmp_path / 'ckpt.pt'} was written by other code, params or data"
    ]
    assert history == fresh[1]


def test_truncated_checkpoint_is_set_aside_with_one_line(tmp_path, capsys, fresh):
    run(tmp_path, {**SETTINGS, "epochs": 1})
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # as a full disk or a killed copy leaves it
    capsys.readouterr()
    _, history = run(tmp_path)
    lines = not_progress(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith(f"{RUN}: starting from scratch: {ckpt}: not a readable checkpoint")
    assert history == fresh[1]


def same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_nan_loss_ends_the_run_as_a_result_with_its_initial_weights(tmp_path, capsys):
    x = data()
    x[70] = float("nan")
    model, history = run(tmp_path, x=x)
    out = capsys.readouterr().out
    assert re.search(r"simple_mlp-2: loss is nan at epoch 1, step \d+\n", out)
    assert (
        "simple_mlp-2: DIVERGED in epoch 1 (train -ELBO nan, test nan): training stops, keeping the initial "
        "weights; try a lower lr (now 0.001)" in out
    )
    assert len(history) == 1 and blew_up(history) and math.isnan(history[0]["test_total"])
    torch.manual_seed(SETTINGS["seed"])
    assert same_weights(model, build_model("simple_mlp", 2, CFG))


@pytest.mark.parametrize("where", ["mid-epoch", "after the epoch"])
def test_a_run_that_blows_up_keeps_the_model_of_its_last_finite_epoch(tmp_path, monkeypatch, capsys, where):
    one, one_history = run(tmp_path, {**SETTINGS, "epochs": 1}, name="one.pt")
    calls = []
    if where == "mid-epoch":  # the loss of the 4th step of epoch 2 (7 steps an epoch) is NaN
        objective = training.training_objective

        def nan_at_step_11(*args):
            calls.append(1)
            return objective(*args) * (math.nan if len(calls) == 11 else 1.0)

        monkeypatch.setattr(training, "training_objective", nan_at_step_11)
    else:  # epoch 2 trains with finite losses, but its test KL is infinite
        evaluate_ = training.evaluate

        def infinite_kl_in_epoch_2(*args):
            calls.append(1)
            return {**evaluate_(*args), **({"kl": math.inf} if len(calls) == 2 else {})}

        monkeypatch.setattr(training, "evaluate", infinite_kl_in_epoch_2)
    capsys.readouterr()
    model, history = run(tmp_path, {**SETTINGS, "epochs": 4}, name="blown.pt")
    assert "DIVERGED in epoch 2" in capsys.readouterr().out and len(calls) == (11 if where == "mid-epoch" else 2)
    assert len(history) == 2 and history[0] == one_history[0] and blew_up(history) and not blew_up(history[:1])
    assert same_weights(model, one)
    # The history says what happened: non-finite figures are written as nan and inf, and read back so.
    write_history(tmp_path / "h.csv", history)
    last = pd.read_csv(tmp_path / "h.csv").iloc[-1]
    assert last["epoch"] == 2 and (
        math.isnan(last["train_total"])
        if where == "mid-epoch"
        else math.isinf(last["test_kl"]) and math.isfinite(last["train_total"])
    )


def test_reloaded_model_gives_the_trained_models_numbers_and_refuses_another_run(tmp_path):
    # A tight clamp that training runs into: a reloaded model must keep it as well as the weights.
    model, _ = run(tmp_path, {**SETTINGS, "epochs": 1, "logvar_clamp": 0.5})
    save_model(tmp_path / "m.pt", model, "simple_mlp", 2, CFG, {"epochs": 1, "parameters": 1})
    loaded, state = load_model(tmp_path / "m.pt", "simple_mlp", 2)
    x = data(50, 1)
    assert loaded is not model and state["epochs"] == 1
    assert evaluate(loaded, x, 25, 1) == evaluate(model, x, 25, 1)
    with pytest.raises(CheckpointError, match="holds a simple_mlp model with z=2, expected conv with z=2"):
        load_model(tmp_path / "m.pt", "conv", 2)


def test_truncated_model_file_names_the_stage_to_rerun_in_one_line(tmp_path):
    path = tmp_path / "study-simple_mlp-2.pt"
    save_model(path, build_model("simple_mlp", 2, CFG), "simple_mlp", 2, CFG, {})
    path.write_bytes(path.read_bytes()[:100])
    rerun = r"; rerun `dvc repro train@study-simple_mlp-2`$"
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint .*" + rerun) as e:
        load_model(path, "simple_mlp", 2)
    assert "\n" not in str(e.value)


def test_device_auto_falls_back_to_cpu_and_cuda_is_checked():
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(DeviceError, match="no CUDA device is available here; set train.device to 'auto' or 'cpu'"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_bf16_and_channels_last_options_train(tmp_path):
    _, h = run(tmp_path, {**SETTINGS, "epochs": 1, "precision": "bf16", "channels_last": False})
    assert all(torch.isfinite(torch.tensor(v)) for v in h[-1].values())


def lrs(settings: dict, steps: int) -> list[float]:
    """The lr of every optimiser step under lr_schedule, read where training reads it."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=settings["lr"])
    schedule = lr_schedule(opt, settings, steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return out


def test_cosine_lr_falls_from_lr_to_zero_and_constant_stays():
    cos = lrs({**SETTINGS, "lr": 1e-3, "lr_schedule": "cosine"}, 100)
    assert cos[0] == pytest.approx(1e-3) and cos[50] == pytest.approx(5e-4) and cos[99] < 1e-6
    assert all(a > b for a, b in zip(cos, cos[1:]))
    assert set(lrs(SETTINGS, 100)) == {SETTINGS["lr"]}


def test_kl_warmup_ramps_linearly_then_holds_at_one():
    warm = {**SETTINGS, "kl_warmup_epochs": 2}
    w = [kl_weight(warm, s, 10) for s in range(30)]
    assert w[0] == pytest.approx(0.05) and w[9] == pytest.approx(0.5) and w[19] == 1.0 and w[29] == 1.0
    assert all(a < b for a, b in zip(w[:19], w[1:20]))
    assert {kl_weight(SETTINGS, s, 10) for s in range(30)} == {1.0}


# Warm-up (KL weight 0.5 in epoch 1 of 2) and free bits make the objective differ from the ELBO.
TUNED = {**SETTINGS, "lr_schedule": "cosine", "kl_warmup_epochs": 2, "free_bits": 0.5}


def test_remedies_are_logged_per_epoch_and_test_loss_is_the_plain_negative_elbo(tmp_path):
    model, history = run(tmp_path, {**TUNED, "epochs": 3})
    assert [round(h["kl_weight"], 6) for h in history] == [0.5, 1.0, 1.0]
    assert history[0]["lr"] > history[1]["lr"] > history[2]["lr"] >= 0
    # The final model on the test set, with the noise evaluate() draws from eval_seed.
    x, g = data(50, 1), torch.Generator().manual_seed(1)
    with torch.no_grad():
        expected = (
            torch.cat(
                [independent_negative_elbo(model, xb, torch.randn(len(xb), 2, generator=g)) for xb in x.split(25)]
            )
            .mean()
            .item()
        )
    assert history[-1]["test_total"] == pytest.approx(expected, rel=1e-5)


def test_train_loss_is_the_plain_negative_elbo_not_the_objective(tmp_path):
    # At lr 0 the weights never move, so the epoch's training loss can be recomputed from the
    # final model with the batches and noise the epoch drew from its generator. Free bits far
    # above the KL at initialisation (~0.3 nats) put the objective nats above the ELBO.
    model, history = run(tmp_path, {**TUNED, "free_bits": 5.0, "lr": 0.0, "epochs": 1})
    x, g = data(), epoch_generator(SETTINGS["seed"], 1)
    with torch.no_grad():
        expected = sum(
            independent_negative_elbo(model, x[idx], torch.randn(len(idx), 2, generator=g)).sum()
            for idx in batches(len(x), SETTINGS["batch_size"], g)
        ).item() / len(x)
    assert history[0]["train_total"] == pytest.approx(expected, rel=1e-5)


def test_the_train_stage_does_not_run_the_evaluation_code():
    """The per-epoch test loss lives in vae/losses.py: a fix to the IW bound or the MI estimator in
    vae/evaluation.py must not retrain every model. The modules a stage has imported are the code
    its resume fingerprint hashes and its dvc.yaml deps list."""
    root = Path(__file__).resolve().parents[1]
    code = "import stages.train; from stages.common import code_fingerprint; print(*code_fingerprint())"
    r = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    imported = r.stdout.split()
    assert "vae/training.py" in imported and "vae/losses.py" in imported
    assert "vae/evaluation.py" not in imported


# --- binarized MNIST (train.binarize: dynamic) ------------------------------------------------------------------

BINARIZED = {**SETTINGS, "binarize": "dynamic"}


def model_inputs(monkeypatch, tmp_path, settings, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(images, noise) of every training step, as the loop hands them to the model."""
    seen = []

    def spy(model, xb, noise=None):
        seen.append((xb.clone(), noise.clone()))
        return negative_elbo(model, xb, noise)

    monkeypatch.setattr(training, "negative_elbo", spy)
    run(tmp_path, settings, **kwargs)
    return seen


def digest(inputs) -> str:
    h = hashlib.sha256()
    for xb, noise in inputs:
        h.update(xb.numpy().tobytes())
        h.update(noise.numpy().tobytes())
    return h.hexdigest()


def test_grey_level_training_draws_the_random_numbers_it_drew_before_binarization_existed(tmp_path, monkeypatch):
    # The batches and noise of this 2-epoch run, recorded with the code before train.binarize existed. They depend
    # on the generators alone, not on floating-point arithmetic, so the hash holds on every machine.
    inputs = model_inputs(monkeypatch, tmp_path, SETTINGS)
    assert digest(inputs) == "f80bd6fade764e9d80510f4b139dd992071a0105b894648cb03685059c47fab1"


# The last commit before train.binarize existed. Float results differ from one CPU to another (even two AVX512
# ones: the hashes recorded on one failed on another), so the test trains with that commit's code and today's on
# this machine and compares the bytes; the hash of the random draws above holds everywhere.
BEFORE_BINARIZE = "49a4860"
FAMILIES = {
    "simple_mlp": ({"hidden": 16}, {}),
    "deep_mlp": ({"hidden": [16, 8]}, {}),
    "conv": ({"channels": [4, 8, 8], "hidden": 16}, {"lr_schedule": "cosine", "kl_warmup_epochs": 1, "free_bits": 0.5}),
    "residual": ({"channels": [4, 8], "blocks": 1, "hidden": 16}, {}),
}
# A 2-epoch run on one thread per (family, cfg, settings) given; prints, per run, the sha256 of its weights
# and of its history CSV. (All families in one process: torch is imported once per code state.)
TRAIN_AND_HASH = """
import hashlib, json, sys, tempfile
from pathlib import Path
import torch
from vae.training import train, write_history
torch.set_num_threads(1)
def data(n, seed):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
for family, cfg, settings in json.loads(sys.argv[1]):
    with tempfile.TemporaryDirectory() as t:
        model, history = train(family + "-2", family, 2, cfg, settings, data(200, 0), data(50, 1),
                               checkpoint=Path(t, "c.pt"), log_dir=Path(t, "logs"), eval_seed=1, eval_batch_size=25,
                               fingerprint="fp")
        write_history(Path(t, "h.csv"), history)
        h = hashlib.sha256()
        for v in model.state_dict().values():
            h.update(v.contiguous().numpy().tobytes())
        print("hashes", family, h.hexdigest(), hashlib.sha256(Path(t, "h.csv").read_bytes()).hexdigest())
"""


def train_and_hash(code: Path, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """Each family's hashes, trained by the vae package in `code`, with the settings it knows (`drop`: the keys
    that code predates)."""
    runs = []
    for family, (cfg, over) in FAMILIES.items():
        settings = {**SETTINGS, **over}
        runs.append([family, cfg, {k: v for k, v in settings.items() if k not in drop}])
    # In the code's folder: `python -c` imports from the working directory first.
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", TRAIN_AND_HASH, json.dumps(runs)], cwd=code, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    hashes = [line.split(" ", 2)[1:] for line in r.stdout.splitlines() if line.startswith("hashes ")]
    assert len(hashes) == len(runs), r.stdout[-3000:]
    return dict(hashes)


# The committed study's code (the 72 runs of 8f41608): this round split the families into files of their own,
# moved validation out of the runs and added train.objective, none of which may change a trained byte.
BEFORE_ROUND = "8f41608"


def checkout_vae(root: Path, commit: str, into: Path) -> Path:
    if subprocess.run(["git", "cat-file", "-e", commit], cwd=root, capture_output=True).returncode:
        pytest.skip(f"commit {commit} is not in this clone's history (a shallow clone?)")
    archive = subprocess.run(["git", "archive", commit, "vae"], cwd=root, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


@pytest.fixture(scope="module")
def trained_today_and_before(tmp_path_factory) -> tuple[dict, dict, dict]:
    """Every family's hashes from today's code, the code before binarization existed, and 8f41608's."""
    root = Path(__file__).resolve().parents[1]
    binarize = checkout_vae(root, BEFORE_BINARIZE, tmp_path_factory.mktemp("before_binarize"))
    round_ = checkout_vae(root, BEFORE_ROUND, tmp_path_factory.mktemp("before_round"))
    new = ("objective", "iw_train_samples")
    return train_and_hash(root), train_and_hash(binarize, ("binarize", *new)), train_and_hash(round_, new)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_grey_level_runs_train_the_models_they_trained_before_binarization_existed(trained_today_and_before, family):
    today, before, _ = trained_today_and_before
    assert today[family] == before[family]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_elbo_runs_train_the_models_the_committed_studys_code_trained(trained_today_and_before, family):
    """Byte for byte, on this machine: the weights and history of a 2-epoch run, today's code against 8f41608's."""
    today, _, before = trained_today_and_before
    assert today[family] == before[family]


def test_a_binarized_run_trains_on_fresh_bits_with_the_grey_runs_batches_and_noise(tmp_path, monkeypatch):
    grey = model_inputs(monkeypatch, tmp_path, SETTINGS, name="grey.pt")
    binarized = model_inputs(monkeypatch, tmp_path, BINARIZED, name="bits.pt")
    x, per_epoch = data(), len(grey) // SETTINGS["epochs"]
    for epoch in (1, 2):
        g, bits = epoch_generator(SETTINGS["seed"], epoch), bits_generator(SETTINGS["seed"], epoch)
        steps = slice((epoch - 1) * per_epoch, epoch * per_epoch)
        for (xb, noise), (grey_xb, grey_noise), idx in zip(binarized[steps], grey[steps], batches(len(x), 32, g)):
            assert torch.equal(noise, grey_noise) and torch.equal(grey_xb, x[idx])  # the same batches and noise
            assert torch.equal(xb, binarize(x[idx], bits))  # drawn from its own generator, batch by batch
            assert set(xb.unique().tolist()) == {0.0, 1.0}

    # Every use of an image draws new bits: no image gets its epoch-1 binarization again in epoch 2.
    def bits_by_image(epoch: int) -> torch.Tensor:
        steps = binarized[(epoch - 1) * per_epoch : epoch * per_epoch]
        order = torch.cat(batches(len(x), 32, epoch_generator(SETTINGS["seed"], epoch)))
        return torch.cat([xb for xb, _ in steps])[order.argsort()]

    assert len(binarized) == len(grey)
    assert not (bits_by_image(1) == bits_by_image(2)).flatten(1).all(1).any()


def test_a_resumed_binarized_run_draws_the_bits_of_the_uninterrupted_run(tmp_path):
    whole, history = run(tmp_path, BINARIZED, name="whole.pt")
    run(tmp_path, {**BINARIZED, "epochs": 1}, name="part.pt")
    resumed, resumed_history = run(tmp_path, BINARIZED, name="part.pt")
    assert resumed_history == history and same_weights(resumed, whole)


def bits_digest(seed: int = 3) -> str:
    """sha256 of the bits a binarized run of `seed` trains on in its first two epochs."""
    h, x = hashlib.sha256(), data()
    for epoch in (1, 2):
        bits = bits_generator(seed, epoch)
        for idx in batches(len(x), 32, epoch_generator(seed, epoch)):
            h.update(binarize(x[idx], bits).numpy().tobytes())
    return h.hexdigest()


def test_two_processes_draw_the_same_bits_whatever_their_threads():
    # What two workers of the study (or a run and its resumption on another machine) draw for one seed.
    root = Path(__file__).resolve().parents[1]
    code = "from tests.test_training import bits_digest; print(bits_digest())"
    out = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": threads},
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for threads in ("1", "2")
    ]
    assert out == [bits_digest()] * 2
