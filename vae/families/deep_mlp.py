"""The study's deeper MLP: hidden layers `hidden` (512-256-128) down to z, mirrored back up."""

from torch import nn

from vae.models import N_PIXELS, mlp, register


@register("deep_mlp")
def build(z: int, hidden: list[int]):
    enc = nn.Sequential(nn.Flatten(), *mlp([N_PIXELS, *hidden]), nn.Linear(hidden[-1], 2 * z))
    rev = hidden[::-1]
    dec = nn.Sequential(*mlp([z, *rev]), nn.Linear(rev[-1], N_PIXELS))
    return enc, dec
