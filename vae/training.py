"""The training loop: `train()` reads top to bottom, each concern a helper below it.

Randomness is derived from (seed, epoch) at the start of every epoch, and the
lr and KL weight are functions of the global step, so a run resumed from an
epoch checkpoint draws exactly the batches, noise and schedule the
uninterrupted run would have drawn. A binarized run (train.binarize: dynamic)
re-draws each batch's pixels as Bernoulli(grey level) from a second generator
derived from (seed, epoch) in the same way, so its bits resume exactly too, and
a run on grey levels draws exactly what it drew before binarization existed.

A run whose loss becomes NaN or infinite stops there and is a result, not a failure:
the model goes back to its state after the last finite epoch, and the history ends
with the epoch that blew up (its non-finite figures), so the comparison counts the
run as diverged instead of missing.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from vae.atomic import write_text, write_torch
from vae.checkpoints import CheckpointError, load_checkpoint
from vae.data import binarize
from vae.errors import StageError
from vae.losses import TERMS, evaluate, importance_weighted, iwae_objective, negative_elbo, training_objective
from vae.models import VAE, build_model

# lr and kl_weight are the values at the epoch's last step. No wall-clock time:
# the history is a tracked output, and identical runs must write identical bytes.
HISTORY_COLUMNS = ["epoch", *[f"{s}_{t}" for s in ("train", "test") for t in TERMS], "lr", "kl_weight"]


class DeviceError(StageError):
    """The configured device is not available here."""


def train(
    run: str,
    family: str,
    z: int,
    model_cfg: dict,
    settings: dict,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    *,
    checkpoint: Path,
    log_dir: Path,
    eval_seed: int,
    eval_batch_size: int,
    fingerprint: str,
) -> tuple[VAE, list[dict]]:
    """Train one run; resume from `checkpoint` only if it was written under the same `fingerprint`."""
    device = resolve_device(settings["device"])
    model, opt = build_training(family, z, model_cfg, settings, device)
    steps_per_epoch = math.ceil(len(train_x) / settings["batch_size"])
    schedule = lr_schedule(opt, settings, steps_per_epoch * settings["epochs"])
    history = resume(run, checkpoint, fingerprint, model, opt, schedule)
    train_x, test_x = train_x.to(device), test_x.to(device)
    writer = open_log(log_dir, history)
    for epoch in progress(run, len(history), settings["epochs"]):
        t0 = time.perf_counter()
        last_finite = {k: v.clone() for k, v in model.state_dict().items()}  # to go back to, should it blow up
        row = train_epoch(run, model, opt, schedule, train_x, settings, epoch, steps_per_epoch)
        # An epoch that hit a non-finite loss stopped there: it has no test figures.
        test = evaluate(model, test_x, eval_batch_size, eval_seed) if finite(row) else dict.fromkeys(TERMS, math.nan)
        row.update({f"test_{t}": v for t, v in test.items()})
        history.append(row)
        if not finite(row):
            model.load_state_dict(last_finite)
            kept = f"the model of epoch {epoch - 1}" if epoch > 1 else "the initial weights"
            tqdm.write(
                f"{run}: DIVERGED in epoch {epoch} (train -ELBO {row['train_total']:.4g}, test "
                f"{row['test_total']:.4g}): training stops, keeping {kept}; try a lower lr (now "
                f"{settings['lr']}) or logvar_clamp (e.g. 10) in train or the recipe"
            )
            break
        seconds = time.perf_counter() - t0
        log_epoch(writer, row, seconds)
        tqdm.write(
            f"{run} epoch {epoch}: train {row['train_total']:.3f}  test {row['test_total']:.3f} "
            f"(recon {row['test_recon']:.3f}, KL {row['test_kl']:.3f})  {seconds:.1f}s"
        )
        write_torch(
            checkpoint,
            {
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "schedule": schedule.state_dict(),
                "history": history,
            },
        )
    writer.close()
    return model, history


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cuda": torch.cuda.is_available,
        "mps": lambda: bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
    }
    if name in available and not available[name]():
        raise DeviceError(
            f"train.device is '{name}' but no {name.upper()} device is available here; "
            "set train.device to 'auto' or 'cpu'"
        )
    return torch.device(name)


def build_training(family: str, z: int, model_cfg: dict, settings: dict, device: torch.device):
    """The model, seeded for its initial weights, and its optimiser."""
    torch.manual_seed(settings["seed"])
    model = build_model(family, z, model_cfg, settings["logvar_clamp"]).to(device)
    if settings["channels_last"]:  # NHWC convolutions: ~1.3-1.5x faster with oneDNN on CPU
        model = model.to(memory_format=torch.channels_last)
    # The fused Adam kernel is ~1.5x faster per step than the loop over parameters on CPU.
    opt = torch.optim.Adam(model.parameters(), lr=settings["lr"], fused=device.type in ("cpu", "cuda"))
    return model, opt


def lr_schedule(opt: torch.optim.Optimizer, settings: dict, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per optimiser step: constant, or cosine from lr down to 0 at the last step."""
    if settings["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total_steps)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def kl_weight(settings: dict, step: int, steps_per_epoch: int) -> float:
    """KL warm-up: the KL term's weight rises linearly from ~0 to 1 over kl_warmup_epochs."""
    warmup = settings["kl_warmup_epochs"] * steps_per_epoch
    return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)


def resume(run: str, checkpoint: Path, fingerprint: str, model: VAE, opt, schedule) -> list[dict]:
    """Load the epoch checkpoint into model, optimiser and schedule; returns the epochs it holds.

    The checkpoint is scratch the stage owns: an unreadable one, or one written
    under another fingerprint (other code, params, data or torch), is set aside
    and training starts over, with one line saying so."""
    if not checkpoint.exists():
        return []
    try:
        state = load_checkpoint(checkpoint)
    except CheckpointError as e:
        print(f"{run}: starting from scratch: {e}")
        return []
    if state.get("fingerprint") != fingerprint:
        print(f"{run}: starting from scratch: {checkpoint} was written by other code, params or data")
        return []
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    print(f"{run}: resuming after epoch {len(state['history'])} from {checkpoint}")
    return state["history"]


def open_log(log_dir: Path, history: list[dict]) -> SummaryWriter:
    """A fresh TensorBoard log, with the resumed epochs replayed into it."""
    shutil.rmtree(log_dir, ignore_errors=True)
    writer = SummaryWriter(str(log_dir))
    for row in history:
        log_epoch(writer, row)
    return writer


def progress(run: str, done: int, epochs: int):
    # disable=None: no bar when stdout is not a terminal (DVC logs, CI).
    return tqdm(range(done + 1, epochs + 1), desc=run, unit="epoch", initial=done, total=epochs, disable=None)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


# torch's CPU generator (mt19937) keeps only the low 32 bits of its seed, so a second stream must differ there:
# epoch_generator's seeds lie below 2**31 (for seeds below 21,474), the binarization's from 2**31 up.
BITS_STREAM = 1 << 31


def bits_generator(seed: int, epoch: int) -> torch.Generator:
    """The dynamic binarization's draws, apart from epoch_generator's: a binarized run's batch order and noise are
    those of the same run on grey levels, and a grey-level run draws what it always drew."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch + BITS_STREAM)


def batches(n: int, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Shuffled index tensors over range(n); the last batch may be short."""
    return torch.randperm(n, generator=generator).split(batch_size)


def train_epoch(
    run: str, model: VAE, opt, schedule, x: torch.Tensor, settings: dict, epoch: int, steps_per_epoch: int
) -> dict:
    """One pass over x; returns the epoch's mean training terms and its last lr and KL weight, or NaN
    training terms where the loss became NaN or infinite (the pass stops at that step)."""
    model.train()
    g = epoch_generator(settings["seed"], epoch)
    bits = bits_generator(settings["seed"], epoch) if settings["binarize"] == "dynamic" else None
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=settings["precision"] == "bf16")
    sums = dict.fromkeys(TERMS, 0.0)
    for step, idx in enumerate(
        tqdm(batches(len(x), settings["batch_size"], g), desc=f"epoch {epoch}", leave=False, disable=None)
    ):
        beta = kl_weight(settings, (epoch - 1) * steps_per_epoch + step, steps_per_epoch)
        xb = x[idx.to(x.device)]
        if bits is not None:  # the batch's images re-drawn as 0/1 pixels, fresh every time they are used
            xb = binarize(xb, bits)
        if settings["objective"] == "iwae":  # K draws per image; with K = 1 the draws of the ELBO's noise
            eps = torch.randn(settings["iw_train_samples"], len(xb), model.z_dim, generator=g).to(x.device)
            with autocast:
                terms, log_w = importance_weighted(model, xb, eps)
            loss = iwae_objective(log_w)
        else:
            noise = torch.randn(len(xb), model.z_dim, generator=g).to(x.device)
            with autocast:
                terms = negative_elbo(model, xb, noise)
            loss = training_objective(terms, beta, settings["free_bits"])
        lr = opt.param_groups[0]["lr"]
        if not torch.isfinite(loss):
            tqdm.write(f"{run}: loss is {loss.item()} at epoch {epoch}, step {step}")
            return {"epoch": epoch, **{f"train_{t}": math.nan for t in TERMS}, "lr": lr, "kl_weight": beta}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
        opt.step()
        schedule.step()
        for t in TERMS:
            sums[t] += terms[t].detach().sum().item()
    return {"epoch": epoch, **{f"train_{t}": sums[t] / len(x) for t in TERMS}, "lr": lr, "kl_weight": beta}


def finite(row: dict) -> bool:
    return all(math.isfinite(v) for v in row.values())


def blew_up(history: list[dict]) -> bool:
    """Training stopped at a NaN or infinite loss: the history's last epoch is the one that blew up."""
    return bool(history) and not finite(history[-1])


def log_epoch(writer: SummaryWriter, row: dict, seconds: float | None = None) -> None:
    """TensorBoard scalars of one epoch; wall time lives here, never in tracked outputs."""
    epoch = row["epoch"]
    for split in ("train", "test"):
        for t in TERMS:
            writer.add_scalar(f"{split}/{t}", row[f"{split}_{t}"], epoch)
    writer.add_scalar("schedule/lr", row["lr"], epoch)
    writer.add_scalar("schedule/kl_weight", row["kl_weight"], epoch)
    if seconds is not None:
        writer.add_scalar("time/epoch_seconds", seconds, epoch)
    writer.flush()


def write_history(path: Path, history: list[dict]) -> None:
    table = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    write_text(path, table.to_csv(index=False, float_format="%.6f", na_rep="nan", lineterminator="\n"))
