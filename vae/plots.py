"""Pictures of one trained run: manifold, reconstructions, prior samples, loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

from vae.atomic import atomic_path, save_figure  # noqa: E402
from vae.models import VAE  # noqa: E402


def _save_grid(path: Path, images: torch.Tensor, nrow: int) -> None:
    with atomic_path(path) as tmp:
        save_image(make_grid(images, nrow=nrow, padding=1, pad_value=0.5), tmp, format="png")


def manifold_codes(z_dim: int, n: int, q: float) -> torch.Tensor:
    """Latent codes on a grid of standard-normal quantiles q..1-q: n x n for z=2, a strip of n for z=1.

    Quantiles rather than an even grid in z put equal prior mass between
    neighbouring images. For z > 2 the first two dimensions vary, the rest stay 0.
    """
    axis = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(q, 1 - q, n))
    if z_dim == 1:
        return axis[:, None]
    # Row r shows z2 from high (top) to low; column c shows z1 from low to high.
    z2, z1 = torch.meshgrid(axis.flip(0), axis, indexing="ij")
    codes = torch.zeros(n * n, z_dim)
    codes[:, 0], codes[:, 1] = z1.reshape(-1), z2.reshape(-1)
    return codes


@torch.no_grad()
def manifold(model: VAE, path: Path, n: int, q: float) -> None:
    codes = manifold_codes(model.z_dim, n, q)
    images = torch.sigmoid(model.decode(codes))
    _save_grid(path, images, nrow=n)


@torch.no_grad()
def reconstructions(model: VAE, x: torch.Tensor, path: Path) -> None:
    """Originals on the top row, reconstructions from the posterior mean below."""
    mu, _ = model.encode(x)
    recon = torch.sigmoid(model.decode(mu))
    _save_grid(path, torch.cat([x, recon]), nrow=len(x))


@torch.no_grad()
def prior_samples(model: VAE, path: Path, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    images = torch.sigmoid(model.decode(torch.randn(n, model.z_dim, generator=g)))
    _save_grid(path, images, nrow=int(n**0.5) or 1)


def loss_curves(history_csv: Path, path: Path, title: str) -> None:
    h = pd.read_csv(history_csv)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, term, label in zip(axes, ("total", "recon", "kl"), ("negative ELBO", "reconstruction", "KL")):
        for split in ("train", "test"):
            ax.plot(h["epoch"], h[f"{split}_{term}"], marker="." if len(h) < 20 else None, label=split)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("nats per image")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


@torch.no_grad()
def latent_space(mu: torch.Tensor, labels: torch.Tensor, path: Path, title: str, classes: list[str]) -> None:
    """Posterior means of the test set by class: a scatter for z >= 2, per-class violins for z = 1."""
    mu, labels = mu.cpu(), labels.cpu()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    if mu.shape[1] == 1:
        ax.violinplot(
            [mu[labels == c, 0].numpy() for c in range(n)],
            positions=range(n),
            orientation="horizontal",
            showmedians=True,
        )
        ax.set_yticks(range(n), classes)
        ax.set_xlabel("E[z | x]")
    else:
        sc = ax.scatter(
            mu[:, 0], mu[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=n - 0.5, s=2, alpha=0.6, rasterized=True
        )
        bar = fig.colorbar(sc, ax=ax, ticks=range(n))
        bar.ax.set_yticklabels(classes)
        ax.set_xlabel("E[z1 | x]")
        ax.set_ylabel("E[z2 | x]")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
