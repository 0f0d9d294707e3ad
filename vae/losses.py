"""The VAE objectives, in one place, and the negative ELBO's mean over a data set (`evaluate`: the test
loss training reports every epoch, and the evaluate stage's negative ELBO).

Two objectives (train.objective): the ELBO, with its analytic KL, and the importance-weighted bound
(Burda et al. 2016) of K samples. The log importance weights have one definition,
`log_importance_weights`, which both the IWAE objective and the evaluation's IW bound
(vae/evaluation.py) use, so the bound a model is trained on and the bound it is scored on cannot drift apart.

Every function returns per-image values (shape [B]); callers average over the
batch, so every reported number is in nats per image. Targets are MNIST's grey
levels in [0, 1] under a Bernoulli likelihood, as in the study and in
pytorch/examples' VAE (for non-binary targets this is a cross-entropy, not a
normalised log-likelihood). A binarized run's targets are 0/1 (train.binarize,
vae/data.py), where the same terms are the exact Bernoulli NLL and its ELBO.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The per-image terms every report shows, in order.
TERMS = ("total", "recon", "kl")


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) under independent Bernoullis, summed over pixels."""
    # with_logits is the numerically stable form of sigmoid + BCELoss.
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) of each latent dimension, analytic, shape [B, D]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def negative_elbo(model, x: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-image reconstruction, KL and their sum (the negative ELBO)."""
    logits, mu, logvar = model(x, noise)
    recon = reconstruction_nll(logits, x)
    kl_dims = kl_per_dimension(mu, logvar)
    kl = kl_dims.sum(1)
    return {"total": recon + kl, "recon": recon, "kl": kl, "kl_dims": kl_dims}


def training_objective(terms: dict[str, torch.Tensor], kl_weight: float = 1.0, free_bits: float = 0.0) -> torch.Tensor:
    """The batch-mean loss that training minimises; reported losses stay the plain negative ELBO.

    kl_weight < 1 is KL warm-up (Bowman et al. 2016). free_bits > 0 stops penalising
    a latent dimension's batch-mean KL below that many nats (Kingma et al. 2016), so
    the optimiser gains nothing by pushing a dimension all the way to the prior.
    """
    if kl_weight == 1.0 and free_bits == 0.0:
        return terms["total"].float().mean()  # the plain ELBO, computed exactly as the study did
    kl = terms["kl_dims"].float().mean(0)
    if free_bits > 0.0:
        kl = kl.clamp(min=free_bits)
    return terms["recon"].float().mean() + kl_weight * kl.sum()


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension. Written out rather than
    torch.distributions.Normal, which refuses a std that underflowed to 0 (a diverged run's model):
    here that is a non-finite figure, which the evaluate stage records as such."""
    return -0.5 * ((z - mu) ** 2 * (-logvar).exp() + logvar + math.log(2 * math.pi)).sum(-1)


def log_importance_weights(
    model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k = mu + sigma * eps_k, eps of shape [K, B, D];
    returns log w and -log p(x|z_k), both [K, B]. The -ELBO of the same samples is -mean_k log w_k, the
    importance-weighted bound -(logsumexp_k log w_k - log K)."""
    k, b, d = eps.shape
    z = mu + (0.5 * logvar).exp() * eps  # [K, B, D]
    logits = model.decode(z.reshape(k * b, d))
    recon = reconstruction_nll(logits, x.repeat(k, 1, 1, 1)).view(k, b)
    log_w = -recon + log_normal(z, torch.zeros_like(z), torch.zeros_like(z)) - log_normal(z, mu, logvar)
    return log_w, recon


def importance_weighted(model, x: torch.Tensor, eps: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The log weights of K samples per image (eps: [K, B, D]), and the terms training reports: those of the
    first sample with the analytic KL, exactly what `negative_elbo` gives for that sample's noise."""
    mu, logvar = model.encode(x)
    log_w, recon = log_importance_weights(model, x, mu, logvar, eps)
    kl_dims = kl_per_dimension(mu, logvar)
    kl = kl_dims.sum(1)
    return {"total": recon[0] + kl, "recon": recon[0], "kl": kl, "kl_dims": kl_dims}, log_w


def iwae_objective(log_w: torch.Tensor) -> torch.Tensor:
    """The batch mean of the importance-weighted bound, -(logsumexp_k log w_k - log K): what an IWAE minimises.
    With K = 1 it is the single-sample negative ELBO, -log w (its KL estimated by that sample, not analytic)."""
    return -(torch.logsumexp(log_w.float(), dim=0) - math.log(log_w.shape[0])).mean()


@torch.no_grad()
def evaluate(model, x: torch.Tensor, batch_size: int, seed: int, z_samples: int = 1) -> dict:
    """Mean per-image total / recon / KL over x, averaging recon over z_samples draws."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    sums = dict.fromkeys(TERMS, 0.0)
    for xb in x.split(batch_size):
        for _ in range(z_samples):
            noise = torch.randn(len(xb), model.z_dim, generator=g).to(xb.device)
            terms = negative_elbo(model, xb, noise)
            for t in TERMS:
                sums[t] += terms[t].sum().item() / z_samples
    return {t: sums[t] / len(x) for t in TERMS}
