"""The `train.device: cuda` path. Skipped on machines without CUDA (this project's CI has none);
run on a GPU machine with `pytest tests/test_cuda.py`."""

import pytest
import torch

from tests.test_training import SETTINGS as TRAINING_SETTINGS
from vae.checkpoints import load_model, save_model
from vae.evaluation import evaluate
from vae.training import resolve_device, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

# test_training's settings, with a cosine schedule and a KL warm-up: every schedule on the device.
SETTINGS = {**TRAINING_SETTINGS, "lr_schedule": "cosine", "kl_warmup_epochs": 1}
CFG = {
    "simple_mlp": {"hidden": 16},
    "conv": {"channels": [8, 16, 16], "hidden": 32},
    "residual": {"channels": [8, 16], "blocks": 1, "hidden": 32},
}


def data(n, seed):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def fit(tmp_path, family, device, **over):
    return train(
        f"{family}-2",
        family,
        2,
        CFG[family],
        {**SETTINGS, "device": device, **over},
        data(256, 0),
        data(64, 1),
        checkpoint=tmp_path / f"{family}-{device}.pt",
        log_dir=tmp_path / f"logs-{family}-{device}",
        eval_seed=1,
        eval_batch_size=32,
        fingerprint="fp",
    )


def test_cuda_and_auto_resolve_to_the_gpu():
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("family", ["simple_mlp", "conv", "residual"])
def test_a_cuda_run_follows_the_cpu_run(tmp_path, family):
    """Same seeds, batches and noise on either device (both drawn on the CPU), so the histories
    differ only by floating-point order: well under 0.1% after two epochs."""
    cpu_model, cpu = fit(tmp_path, family, "cpu")
    gpu_model, gpu = fit(tmp_path, family, "cuda")
    assert next(gpu_model.parameters()).device.type == "cuda"
    for a, b in zip(cpu, gpu):
        for key in ("train_total", "test_total", "test_recon", "test_kl"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-3), (key, a["epoch"])


def test_a_model_trained_on_cuda_is_saved_and_evaluated_on_the_cpu(tmp_path):
    """The train stage saves model.cpu(); evaluate loads it on a machine that may have no GPU."""
    model, history = fit(tmp_path, "conv", "cuda")
    save_model(tmp_path / "m.pt", model.cpu(), "conv", 2, CFG["conv"], {"epochs": len(history)})
    loaded, _ = load_model(tmp_path / "m.pt", "conv", 2)
    assert next(loaded.parameters()).device.type == "cpu"
    on_cpu = evaluate(loaded, data(64, 1), seed=1, batch_size=32)
    assert on_cpu["total"] == pytest.approx(history[-1]["test_total"], rel=1e-4)


def test_bf16_autocast_trains_on_cuda(tmp_path):
    _, history = fit(tmp_path, "conv", "cuda", precision="bf16", epochs=1)
    assert all(torch.isfinite(torch.tensor(v)) for v in history[-1].values())
