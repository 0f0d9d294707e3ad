"""The four model families behind one interface.

Every family builds an encoder (x -> 2*z features, split into mu and logvar)
and a decoder (z -> 28x28 Bernoulli logits). `VAE` wraps the pair, so the loss,
training loop, evaluation and plots never look at which family they run.
The registry `FAMILIES` is keyed by the names used in params.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
N_PIXELS = 28 * 28


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


FAMILIES: dict[str, Family] = {}


def register(name: str, *params: str):
    def deco(fn):
        FAMILIES[name] = Family(fn, params)
        return fn

    return deco


def build_model(family: str, z_dim: int, cfg: dict, logvar_clamp: float | None = None) -> VAE:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    enc, dec = FAMILIES[family].build(z_dim, **cfg)
    return VAE(enc, dec, z_dim, logvar_clamp)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _mlp(sizes: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers


@register("simple_mlp", "hidden")
def simple_mlp(z: int, hidden: int):
    # One hidden layer each way, as in pytorch/examples' VAE.
    enc = nn.Sequential(nn.Flatten(), nn.Linear(N_PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z))
    dec = nn.Sequential(nn.Linear(z, hidden), nn.ReLU(), nn.Linear(hidden, N_PIXELS))
    return enc, dec


@register("deep_mlp", "hidden")
def deep_mlp(z: int, hidden: list[int]):
    enc = nn.Sequential(nn.Flatten(), *_mlp([N_PIXELS, *hidden]), nn.Linear(hidden[-1], 2 * z))
    rev = hidden[::-1]
    dec = nn.Sequential(*_mlp([z, *rev]), nn.Linear(rev[-1], N_PIXELS))
    return enc, dec


@register("conv", "channels", "hidden")
def conv(z: int, channels: list[int], hidden: int):
    if len(channels) != 3:
        raise ValueError(f"models.conv.channels must list 3 sizes, got {channels}")
    c1, c2, c3 = channels
    enc = nn.Sequential(
        nn.Conv2d(1, c1, 4, 2, 1),
        nn.ReLU(),  # 14x14
        nn.Conv2d(c1, c2, 4, 2, 1),
        nn.ReLU(),  # 7x7
        nn.Conv2d(c2, c3, 3, 2, 1),
        nn.ReLU(),  # 4x4
        nn.Flatten(),
        nn.Linear(c3 * 16, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 2 * z),
    )
    dec = nn.Sequential(
        nn.Linear(z, hidden),
        nn.ReLU(),
        nn.Linear(hidden, c3 * 16),
        nn.ReLU(),
        nn.Unflatten(1, (c3, 4, 4)),
        nn.ConvTranspose2d(c3, c2, 3, 2, 1),
        nn.ReLU(),  # 7x7
        nn.ConvTranspose2d(c2, c1, 4, 2, 1),
        nn.ReLU(),  # 14x14
        nn.ConvTranspose2d(c1, 1, 4, 2, 1),  # 28x28 logits
    )
    return enc, dec


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(relu(conv(relu(x))))."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x):
        return x + self.body(x)


@register("residual", "channels", "blocks", "hidden")
def residual(z: int, channels: list[int], blocks: int, hidden: int):
    # Downsample first: residual blocks at 28x28 would cost ~4x the arithmetic
    # on a CPU for little gain on MNIST.
    if len(channels) != 2:
        raise ValueError(f"models.residual.channels must list 2 sizes, got {channels}")
    c1, c2 = channels
    res = lambda c: [ResBlock(c) for _ in range(blocks)]  # noqa: E731
    enc = nn.Sequential(
        nn.Conv2d(1, c1, 4, 2, 1),
        *res(c1),  # 14x14
        nn.Conv2d(c1, c2, 4, 2, 1),
        *res(c2),  # 7x7
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * 49, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 2 * z),
    )
    dec = nn.Sequential(
        nn.Linear(z, hidden),
        nn.ReLU(),
        nn.Linear(hidden, c2 * 49),
        nn.Unflatten(1, (c2, 7, 7)),
        *res(c2),
        nn.ConvTranspose2d(c2, c1, 4, 2, 1),
        *res(c1),  # 14x14
        nn.ReLU(),
        nn.ConvTranspose2d(c1, 1, 4, 2, 1),  # 28x28 logits
    )
    return enc, dec
