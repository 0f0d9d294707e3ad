"""The one interface every model family has, and the registry of families.

A family is a file of its own, vae/families/NAME.py, NAME being the name params.yaml uses
(`families`, `models.NAME`). It registers a function building an encoder (x -> 2*z features,
split into mu and logvar) and a decoder (z -> 28x28 Bernoulli logits); `VAE` wraps the pair, so
the loss, training loop, evaluation and plots never look at which family they run. The keyword
arguments of that function after `z` are the family's keys under `models.NAME`.

A family's file is imported only when a run asks for it (`build_model`), so a run depends on its
own family's file and on this one, not on the other families' (dvc.yaml: vae/families/${item.family}.py).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
N_PIXELS = 28 * 28
FAMILY_DIR = Path(__file__).parent / "families"


class VAE(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, z_dim: int, logvar_clamp: float | None = None):
        super().__init__()
        self.encoder, self.decoder, self.z_dim = encoder, decoder, z_dim
        self.logvar_clamp = logvar_clamp

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        if self.logvar_clamp is not None:
            # exp(logvar) overflows to inf for logvar > 88 in float32: the usual
            # first step of a diverging run at a high learning rate.
            logvar = logvar.clamp(-self.logvar_clamp, self.logvar_clamp)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *IMAGE_SHAPE)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """Returns (logits, mu, logvar) with z = mu + sigma * noise (reparameterization)."""
        mu, logvar = self.encode(x)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mu, logvar


@dataclass(frozen=True)
class Family:
    build: Callable[..., tuple[nn.Module, nn.Module]]
    params: tuple[str, ...]  # the keys of models.<family> in params.yaml


# Filled as family files are imported: by `family()` one at a time, by `load_all()` every one.
FAMILIES: dict[str, Family] = {}


def register(name: str):
    """Registers `build(z, **models.NAME)`; its keyword arguments after z are the family's params."""

    def deco(fn):
        if fn.__module__.rsplit(".", 1)[-1] != name:
            raise ValueError(f"family {name!r} must be registered from vae/families/{name}.py, not {fn.__module__}")
        FAMILIES[name] = Family(fn, tuple(inspect.signature(fn).parameters)[1:])
        return fn

    return deco


def known_families() -> list[str]:
    """Every family there is a file for, whether imported or not."""
    return sorted(p.stem for p in FAMILY_DIR.glob("*.py") if not p.name.startswith("_"))


def family(name: str) -> Family:
    if name not in FAMILIES:
        if name not in known_families():
            raise ValueError(f"unknown model family {name!r}; known: {', '.join(known_families())}")
        importlib.import_module(f"vae.families.{name}")
    return FAMILIES[name]


def load_all() -> dict[str, Family]:
    """Every family, imported: for the stage that validates params.yaml, not for the runs."""
    return {name: family(name) for name in known_families()}


def build_model(name: str, z_dim: int, cfg: dict, logvar_clamp: float | None = None) -> VAE:
    enc, dec = family(name).build(z_dim, **cfg)
    return VAE(enc, dec, z_dim, logvar_clamp)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mlp(sizes: list[int]) -> list[nn.Module]:
    """Linear + ReLU for each step of `sizes`: the hidden layers of the MLP families."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers
