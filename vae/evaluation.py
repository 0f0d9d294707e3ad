"""Evaluation of a trained model: the negative ELBO, the importance-weighted bound and
posterior-collapse diagnostics.

MNIST's targets are grey levels in [0, 1], so the Bernoulli term is a
cross-entropy, not a normalised likelihood: the importance-weighted bound
(Burda et al. 2016) is a tighter bound than the ELBO on the same cross-entropy,
not an NLL comparable with published binarized-MNIST numbers.

All log densities are in nats; every function works in batches (`x.split`),
so memory stays bounded whatever the test-set size or the number of
importance samples.
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Normal

from vae.losses import TERMS, kl_per_dimension, negative_elbo, reconstruction_nll
from vae.models import VAE


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, batch_size: int, seed: int, z_samples: int = 1) -> dict:
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


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)


@torch.no_grad()
def iw_bound(model: VAE, x: torch.Tensor, k: int, generator: torch.Generator, chunk: int = 100) -> torch.Tensor:
    """Per-image importance-weighted bound -(logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K),
    z_k ~ q(z|x).

    The K samples are drawn `chunk` at a time and folded into a running
    logsumexp, so memory is O(len(x) * chunk * pixels), not O(K). With K = 1
    this is the single-sample negative ELBO; it falls towards -log p(x) as K grows.
    """
    mu, logvar = model.encode(x)
    b, d = mu.shape
    acc = torch.full((b,), -math.inf, device=x.device)
    done = 0
    while done < k:
        n = min(chunk, k - done)
        eps = torch.randn(n, b, d, generator=generator).to(x.device)
        z = mu + (0.5 * logvar).exp() * eps                           # [n, b, d]
        logits = model.decode(z.reshape(n * b, d))
        log_px_z = -reconstruction_nll(logits, x.repeat(n, 1, 1, 1)).view(n, b)
        log_w = log_px_z + _log_normal(z, torch.zeros_like(z), torch.zeros_like(z)) - _log_normal(z, mu, logvar)
        acc = torch.logaddexp(acc, torch.logsumexp(log_w, dim=0))
        done += n
    return -(acc - math.log(k))


@torch.no_grad()
def posterior_stats(model: VAE, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and log-variances of every image in x."""
    mus, logvars = zip(*(model.encode(xb) for xb in x.split(batch_size)))
    return torch.cat(mus), torch.cat(logvars)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions d with Var_x(E_q[z_d | x]) > threshold (Burda et al., 2016)."""
    return int((mu.var(dim=0) > threshold).sum())


def mean_kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> list[float]:
    """Mean over images of each latent dimension's KL to N(0, 1), in nats."""
    return kl_per_dimension(mu, logvar).mean(0).tolist()


@torch.no_grad()
def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator,
                       batch_size: int = 1000) -> float:
    """I_q(x; z) = E_x E_q(z|x)[log q(z|x)] - E_q(z)[log q(z)], q(z) estimated from a minibatch.

    The aggregate posterior q(z) is the mixture of the batch's posteriors, as in
    He et al. (2019), so each batch's estimate is at most log(batch size).
    Averaged over minibatches of the test set.
    """
    total = 0.0
    for m, lv in zip(mu.split(batch_size), logvar.split(batch_size)):
        n, d = m.shape
        # E_q(z|x)[log q(z|x)] is the negative entropy of a Gaussian: analytic.
        neg_entropy = (-0.5 * d * (math.log(2 * math.pi) + 1) - 0.5 * lv.sum(1)).mean()
        z = m + (0.5 * lv).exp() * torch.randn(m.shape, generator=generator).to(m.device)
        log_q = _log_normal(z[:, None, :], m[None], lv[None])  # [n z's, n posteriors]
        log_qz = torch.logsumexp(log_q, dim=1) - math.log(n)
        total += (neg_entropy - log_qz.mean()).item() * n
    return total / len(mu)


def collapse(active: int, z: int, kl_dims: list[float], kl_threshold: float) -> list[str]:
    """Reasons this run counts as (partly) collapsed; empty when healthy."""
    reasons = []
    if active < z:
        reasons.append(f"{active}/{z} active units")
    low = [i for i, kl in enumerate(kl_dims) if kl < kl_threshold]
    if low:
        reasons.append(f"KL < {kl_threshold} nats in dim {', '.join(map(str, low))}")
    return reasons


def full_report(model: VAE, x: torch.Tensor, *, iw_samples: int, iw_images: int | None, iw_batch: int,
                seed: int, batch_size: int, kl_threshold: float, au_threshold: float) -> dict:
    """Every diagnostic of one run: IW bound, ELBO gap, active units, KL per dimension, MI, collapse.

    The importance-weighted bound is computed on a seeded random subset of
    `iw_images` images (all when None): the same subset for every run, so runs
    are compared on equal terms. The ELBO gap is the negative ELBO minus the IW
    bound on that same subset. The other diagnostics use all of x.
    """
    g = torch.Generator().manual_seed(seed)
    subset = x
    if iw_images is not None and iw_images < len(x):
        subset = x[torch.randperm(len(x), generator=g)[:iw_images]]
    bound = torch.cat([iw_bound(model, xb, iw_samples, g) for xb in subset.split(iw_batch)]).mean()
    subset_elbo = evaluate(model, subset, batch_size, seed)["total"]
    mu, logvar = posterior_stats(model, x, batch_size)
    kl_dims = mean_kl_per_dimension(mu, logvar)
    active = active_units(mu, au_threshold)
    reasons = collapse(active, model.z_dim, kl_dims, kl_threshold)
    return {
        "iw_bound": bound.item(),
        "elbo_gap": subset_elbo - bound.item(),
        "iw_images": len(subset),
        "active_units": active,
        "kl_per_dim": [round(v, 4) for v in kl_dims],
        "mutual_info": mutual_information(mu, logvar, g),
        "collapsed": bool(reasons),
        "collapse_reasons": reasons,
    }
