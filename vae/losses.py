"""The VAE objective, in one place.

Every function returns per-image values (shape [B]); callers average over the
batch, so every reported number is in nats per image. Targets are MNIST's grey
levels in [0, 1] under a Bernoulli likelihood, as in the study and in
pytorch/examples' VAE (for non-binary targets this is a cross-entropy, not a
normalised log-likelihood).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) under independent Bernoullis, summed over pixels."""
    # with_logits is the numerically stable form of sigmoid + BCELoss.
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), analytic, summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def negative_elbo(model, x: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-image reconstruction, KL and their sum (the negative ELBO)."""
    logits, mu, logvar = model(x, noise)
    recon = reconstruction_nll(logits, x)
    kl = kl_to_standard_normal(mu, logvar)
    return {"total": recon + kl, "recon": recon, "kl": kl}
