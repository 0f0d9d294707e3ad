"""What the benchmark scripts share: the data as the stages load it, and a training run that leaves nothing behind."""

import tempfile
from pathlib import Path

import torch

from vae import paths
from vae.data import load_split, to_float
from vae.training import train


def load_images(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test images of an MNIST-format data set (params' data.dataset) from data/DATASET, as floats,
    with subnormals flushed as the stages do (stages/common.py)."""
    torch.set_flush_denormal(True)  # same numbers; without it a collapsing run is ~2x slower
    train_images, test_images = (load_split(paths.data(dataset), dataset, split)[0] for split in ("train", "test"))
    return to_float(train_images), to_float(test_images)


def train_scratch(
    name: str, family: str, z: int, params: dict, settings: dict, train_x: torch.Tensor, test_x: torch.Tensor
):
    """The pipeline's training loop with its checkpoint and logs in a temp dir: returns (model, history)."""
    with tempfile.TemporaryDirectory() as tmp:
        return train(
            name,
            family,
            z,
            params["models"][family],
            settings,
            train_x,
            test_x,
            checkpoint=Path(tmp) / "c.pt",
            log_dir=Path(tmp) / "logs",
            eval_seed=params["eval"]["seed"],
            eval_batch_size=params["eval"]["batch_size"],
            fingerprint="scratch",
        )
