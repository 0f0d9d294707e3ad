"""Evaluation of a trained model: the importance-weighted bound and posterior-collapse
diagnostics. The negative ELBO over a data set (`evaluate`) lives with the losses in
vae/losses.py, so training, which reports it every epoch, does not depend on this file.

On the study's grey-level targets in [0, 1] the Bernoulli term is a
cross-entropy, not a normalised likelihood: the importance-weighted bound
(Burda et al. 2016) is a tighter bound than the ELBO on the same cross-entropy,
not an NLL comparable with published binarized-MNIST numbers. A binarized run
(train.binarize: dynamic) is scored on the fixed binarization of the test set
(vae/data.py): on 0/1 targets the same code gives a true log-likelihood, and the
bound is an upper bound on the NLL of binarized MNIST, the literature's figure.

All log densities are in nats; every function works in batches (`x.split`),
so memory stays bounded whatever the test-set size or the number of
importance samples.
"""

from __future__ import annotations

import math

import torch

from vae.losses import evaluate as evaluate  # re-exported: `from vae.evaluation import evaluate` still works
from vae.losses import kl_per_dimension, log_importance_weights, log_normal
from vae.models import VAE


@torch.no_grad()
def iw_estimates(
    model: VAE, x: torch.Tensor, k: int, generator: torch.Generator, chunk: int = 100, also: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-image importance-weighted bound and negative ELBO, both from the same K samples z_k ~ q(z|x),
    and the bound at K = `also` < K from the first `also` of those samples (None without `also`).

    With log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), the bound is -(logsumexp_k log w_k - log K)
    and the negative ELBO -mean_k log w_k: by Jensen's inequality the bound is at most the negative ELBO,
    image by image, so their difference (the ELBO gap) is free of the noise of two independent estimates.
    The K samples are drawn `chunk` at a time and folded into a running logsumexp and sum, so memory is
    O(len(x) * chunk * pixels), not O(K). With K = 1 both are the single-sample negative ELBO; the bound
    falls towards -log p(x) as K grows. A chunk ends at `also`, so the samples drawn, and the K-sample
    figures, are the same with or without it when `also` is a multiple of `chunk`.
    """
    if also is not None and not 1 <= also < k:
        raise ValueError(f"the bound at K={also} needs 1 <= {also} < K={k}")
    bound_also = None
    mu, logvar = model.encode(x)
    b, d = mu.shape
    # float64 accumulators: the K-term sum and logsumexp stay exact to ~1e-12 nats, far below any gap.
    lse = torch.full((b,), -math.inf, dtype=torch.float64, device=x.device)
    sum_log_w = torch.zeros(b, dtype=torch.float64, device=x.device)
    done = 0
    while done < k:
        n = min(chunk, k - done, also - done if also is not None and done < also else k)
        eps = torch.randn(n, b, d, generator=generator).to(x.device)
        log_w = log_importance_weights(model, x, mu, logvar, eps)[0].double()
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
        sum_log_w += log_w.sum(0)
        done += n
        if done == also:
            bound_also = -(lse - math.log(also))
    return -(lse - math.log(k)), -sum_log_w / k, bound_also


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
def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator, chunk: int = 256) -> float:
    return mutual_information_se(mu, logvar, generator, chunk)[0]


@torch.no_grad()
def mutual_information_se(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator, chunk: int = 256
) -> tuple[float, float]:
    """I_q(x; z) = E_x E_q(z|x)[log q(z|x)] - E_q(z)[log q(z)], x uniform over the N images given.

    The aggregate posterior q(z) is the mixture of all N posteriors: one z_i ~ q(z|x_i) per image, and
    log q(z_i) = logsumexp_j log q(z_i|x_j) - log N. A mixture over a minibatch (He et al. 2019) would cap
    the estimate at log(batch size); over all N it is at most log N (9.21 nats for 10,000 test images),
    as x carries log N nats. The z's are scored `chunk` at a time: memory O(chunk * N * z).

    With its standard error over images: one z per image, so the SE over images of each image's term. It counts
    the draw of the test images as well as of the z's, so it bounds the Monte Carlo error from above; for a
    collapsed run (every posterior the prior, the terms differ by their z alone) the two are the same. A
    collapsed run's MI is 0, and its estimate can come out a little below 0 (about one SE): noise, not a
    negative information.
    """
    n, d = mu.shape
    # E_q(z|x)[log q(z|x)] is the negative entropy of a Gaussian: analytic.
    neg_entropy = (-0.5 * d * (math.log(2 * math.pi) + 1) - 0.5 * logvar.sum(1)).mean()
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=generator).to(mu.device)
    log_qz = torch.cat(
        [torch.logsumexp(log_normal(zc[:, None, :], mu[None], logvar[None]), dim=1) for zc in z.split(chunk)]
    ) - math.log(n)
    terms = -0.5 * d * (math.log(2 * math.pi) + 1) - 0.5 * logvar.sum(1) - log_qz
    return (neg_entropy - log_qz.mean()).item(), standard_error(terms)


# Float rounding in the float64 accumulators: where all K weights are equal (a collapsed run) the gap of an
# image can come out -1e-13. Anything more negative is not rounding but a wrong estimator.
GAP_TOLERANCE = 1e-6


def elbo_gap(neg_elbo: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """Per image, the negative ELBO minus the IW bound from the same samples: >= 0 by Jensen's inequality.
    Rounding below GAP_TOLERANCE is set to 0; a more negative gap raises, as it means the estimates are wrong."""
    gap = neg_elbo - bound
    worst = gap.min().item() if len(gap) else 0.0
    if worst < -GAP_TOLERANCE:
        raise ValueError(
            f"ELBO gap of {worst:.3g} nats on an image: the IW bound exceeds the -ELBO of the same samples, "
            "which Jensen's inequality forbids; the estimator is wrong"
        )
    return gap.clamp(min=0.0)


def standard_error(values: torch.Tensor) -> float:
    return (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else math.nan


def collapse(active: int, z: int, kl_dims: list[float], kl_threshold: float) -> list[str]:
    """Reasons this run counts as (partly) collapsed; empty when healthy."""
    reasons = []
    if active < z:
        reasons.append(f"{active}/{z} active units")
    low = [i for i, kl in enumerate(kl_dims) if kl < kl_threshold]
    if low:
        reasons.append(f"KL < {kl_threshold} nats in dim {', '.join(map(str, low))}")
    return reasons


def full_report(
    model: VAE,
    x: torch.Tensor,
    *,
    iw_samples: int,
    iw_images: int | None,
    iw_also: int | None = None,
    iw_batch: int,
    seed: int,
    batch_size: int,
    kl_threshold: float,
    au_threshold: float,
) -> dict:
    """Every diagnostic of one run: IW bound, ELBO gap, active units, KL per dimension, MI, collapse.

    The importance-weighted bound is computed on a seeded random subset of `iw_images` images (all when
    None): the same subset for every run, so runs are compared on equal terms. The subset's negative ELBO
    (`subset_total`) and the ELBO gap come from the same importance samples as the bound; `iw_bound_se` is
    the bound's standard error over those images, how far another set of as many images could move it
    (the evaluate stage reports it for binarized runs, whose bound is a likelihood claim). With `iw_also`,
    the bound at that K as well (`iw_bound_also`, `iw_bound_also_se`), from the first iw_also of the same
    samples. The other diagnostics use all of x.
    """
    g = torch.Generator().manual_seed(seed)
    subset = x
    if iw_images is not None and iw_images < len(x):
        subset = x[torch.randperm(len(x), generator=g)[:iw_images]]
    parts = [iw_estimates(model, xb, iw_samples, g, also=iw_also) for xb in subset.split(iw_batch)]
    bound, neg_elbo = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    gap = elbo_gap(neg_elbo, bound)
    mu, logvar = posterior_stats(model, x, batch_size)
    kl_dims = mean_kl_per_dimension(mu, logvar)
    active = active_units(mu, au_threshold)
    reasons = collapse(active, model.z_dim, kl_dims, kl_threshold)
    extra = {}
    if iw_also is not None:
        at_also = torch.cat([p[2] for p in parts if p[2] is not None])
        extra = {"iw_bound_also": at_also.mean().item(), "iw_bound_also_se": standard_error(at_also)}
    return {
        "subset_total": neg_elbo.mean().item(),
        "iw_bound": bound.mean().item(),
        "iw_bound_se": standard_error(bound),
        **extra,
        "elbo_gap": gap.mean().item(),
        "iw_images": len(subset),
        "active_units": active,
        "kl_per_dim": [round(v, 4) for v in kl_dims],
        **dict(zip(("mutual_info", "mutual_info_se"), mutual_information_se(mu, logvar, g))),
        "collapsed": bool(reasons),
        "collapse_reasons": reasons,
    }
