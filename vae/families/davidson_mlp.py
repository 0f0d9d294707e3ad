"""The network of the S-VAE paper's MNIST experiments (Davidson et al. 2018, "Hyperspherical Variational
Auto-Encoders"), with its Gaussian latent: the N-VAE they set the S-VAE beside.

From their released code (github.com/nicola-decao/s-vae-pytorch, examples/mnist.py at 671c46c):
encoder 784 -> 2h -> h with ReLU and h = H_DIM = 128 (so `hidden: [256, 128]`), then a mean head and a
scale head, the scale through softplus and used as the standard deviation; decoder z -> h -> 2h -> 784
logits, trained with binary cross-entropy. Here both heads are one Linear(h, 2z), the same weights as two
Linear(h, z), and the scale leaves the encoder as the log-variance the shared interface takes:
logvar = 2 log softplus(raw). With z=1 it has 468,882 parameters, with z=2 469,268 (deep_mlp: 1.13 M).
"""

import torch
from torch import nn
from torch.nn import functional as F

from vae.models import N_PIXELS, mlp, register


class SoftplusScale(nn.Module):
    """(mu, raw) -> (mu, 2 log softplus(raw)): their standard deviation, as a log-variance."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mu, raw = h.chunk(2, dim=1)
        # Far below 0 softplus(raw) ~ exp(raw), whose log underflows to -inf in float32: take raw there. The
        # clamp keeps the branch torch.where discards finite, or its gradient would be NaN.
        log_sigma = torch.where(raw < -20, raw, F.softplus(raw.clamp(min=-20)).log())
        return torch.cat([mu, 2 * log_sigma], dim=1)


@register("davidson_mlp")
def build(z: int, hidden: list[int]):
    enc = nn.Sequential(nn.Flatten(), *mlp([N_PIXELS, *hidden]), nn.Linear(hidden[-1], 2 * z), SoftplusScale())
    rev = hidden[::-1]
    dec = nn.Sequential(*mlp([z, *rev]), nn.Linear(rev[-1], N_PIXELS))
    return enc, dec
