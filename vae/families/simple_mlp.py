"""The study's simple MLP: one hidden layer each way, as in pytorch/examples' VAE."""

from torch import nn

from vae.models import N_PIXELS, register


@register("simple_mlp")
def build(z: int, hidden: int):
    enc = nn.Sequential(nn.Flatten(), nn.Linear(N_PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z))
    dec = nn.Sequential(nn.Linear(z, hidden), nn.ReLU(), nn.Linear(hidden, N_PIXELS))
    return enc, dec
