"""Saving and loading weights: trained models (DVC outputs) and epoch checkpoints (scratch)."""

from __future__ import annotations

from pathlib import Path

import torch

from vae.atomic import write_torch
from vae.errors import StageError
from vae.models import VAE, build_model


class CheckpointError(StageError):
    """A model or checkpoint file is unreadable or belongs to another run."""


def load_checkpoint(path: Path) -> dict:
    """weights_only=True: a tampered file cannot run code on load."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None


def save_model(path: Path, model: VAE, family: str, z: int, model_cfg: dict, extra: dict) -> None:
    write_torch(
        path,
        {
            "family": family,
            "z": z,
            "model_cfg": model_cfg,
            "logvar_clamp": model.logvar_clamp,
            "state_dict": model.state_dict(),
            **extra,
        },
    )


def load_model(path: Path, family: str, z: int, producer: str | None = None) -> tuple[VAE, dict]:
    """Load a trained model, refusing one saved for another family or latent size; an error names the
    stage that writes it (`producer`, train@RUN by default) to rerun."""
    rerun = f"rerun `dvc repro {producer or 'train@' + path.stem}`"
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; {rerun}")
    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {rerun}") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{path}: not a model file written by stages/train.py; {rerun}")
    if (state["family"], state["z"]) != (family, z):
        raise CheckpointError(
            f"{path}: holds a {state['family']} model with z={state['z']}, expected {family} with z={z}; {rerun}"
        )
    model = build_model(family, z, state["model_cfg"], state.get("logvar_clamp"))
    model.load_state_dict(state["state_dict"])
    return model.eval(), state
