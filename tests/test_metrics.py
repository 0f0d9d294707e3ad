import math

import pytest
import torch
from torch.distributions import Normal

from vae.losses import negative_elbo, reconstruction_nll
from vae.metrics import (active_units, collapse, full_report, importance_sampled_nll, mean_kl_per_dimension,
                         mutual_information, posterior_stats)
from vae.models import build_model
from vae.training import train
from tests.test_training import TCFG, data


def blobs(n, seed=0):
    """Images of a Gaussian blob at a random position: two real factors of variation."""
    g = torch.Generator().manual_seed(seed)
    centre = 6 + 16 * torch.rand(n, 2, 1, 1, generator=g)
    grid = torch.arange(28.0)
    img = torch.exp(-((grid[None, :, None] - centre[:, 0]) ** 2 + (grid[None, None, :] - centre[:, 1]) ** 2) / 8)
    return img[:, None]


@pytest.fixture(scope="module")
def trained():
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = train("simple_mlp-2", "simple_mlp", 2, {"hidden": 64}, {**TCFG, "epochs": 5, "lr": 3e-3},
                         blobs(1000), blobs(50, 1), checkpoint=Path(tmp) / "c.pt", log_dir=Path(tmp) / "l",
                         eval_seed=1, eval_batch_size=50, fp="x")
    return model.eval()


def dead_dimension_model(z=3, dead=1):
    """An encoder whose mu and logvar ignore the input in dimension `dead`: q(z_dead|x) = N(0, 1)."""
    torch.manual_seed(0)
    model = build_model("simple_mlp", z, {"hidden": 32})
    last = model.encoder[-1]
    with torch.no_grad():
        for row in (dead, z + dead):  # mu_dead and logvar_dead
            last.weight[row].zero_()
            last.bias[row] = 0.0
    return model.eval()


def test_is_nll_with_one_sample_is_the_single_sample_elbo(trained):
    x = data(20, 2)
    nll = importance_sampled_nll(trained, x, 1, torch.Generator().manual_seed(5))
    eps = torch.randn(1, 20, 2, generator=torch.Generator().manual_seed(5))[0]
    mu, logvar = trained.encode(x)
    q = Normal(mu, (0.5 * logvar).exp())
    zs = q.loc + q.scale * eps
    mc_elbo = (reconstruction_nll(trained.decode(zs), x) + q.log_prob(zs).sum(1)
               - Normal(0.0, 1.0).log_prob(zs).sum(1))
    assert torch.allclose(nll, mc_elbo.detach(), rtol=1e-5, atol=1e-3)
    # Its expectation is the analytic-KL negative ELBO the training loop reports.
    many = torch.stack([importance_sampled_nll(trained, x, 1, torch.Generator().manual_seed(s))
                        for s in range(300)]).mean()
    assert math.isclose(many.item(), negative_elbo(trained, x, torch.zeros(20, 2))["kl"].mean().item()
                        + negative_elbo(trained, x)["recon"].mean().item(), rel_tol=0.02)


def test_is_nll_does_not_increase_with_more_samples(trained):
    x = data(30, 3)
    nll = {k: importance_sampled_nll(trained, x, k, torch.Generator().manual_seed(0), chunk=64).mean().item()
           for k in (1, 10, 500)}
    assert nll[500] <= nll[10] <= nll[1]


def test_is_nll_chunking_bounds_memory_without_changing_the_estimate(trained):
    x = data(10, 4)
    a = importance_sampled_nll(trained, x, 200, torch.Generator().manual_seed(0), chunk=200)
    b = importance_sampled_nll(trained, x, 200, torch.Generator().manual_seed(0), chunk=200)
    c = importance_sampled_nll(trained, x, 200, torch.Generator().manual_seed(0), chunk=7)
    assert torch.equal(a, b) and torch.isfinite(c).all()
    assert abs(a.mean() - c.mean()) < 1.0  # different draws, same estimator


def test_active_units_count_a_dead_dimension():
    model = dead_dimension_model(z=3, dead=1)
    mu, logvar = posterior_stats(model, data(300), 100)
    assert active_units(mu, 0.01) == 2
    kl = mean_kl_per_dimension(mu, logvar)
    assert kl[1] == 0.0 and kl[0] > 0 and kl[2] > 0


def test_collapse_flag_fires_on_collapsed_run_only(trained):
    sick = full_report(dead_dimension_model(z=2, dead=0), data(200), nll_samples=5, nll_images=None,
                       nll_batch=100, seed=0, batch_size=100, kl_threshold=0.01, au_threshold=0.01)
    assert sick["collapsed"] and sick["active_units"] == 1
    assert sick["collapse_reasons"] == ["1/2 active units", "KL < 0.01 nats in dim 0"]
    healthy = full_report(trained, blobs(200, 2), nll_samples=5, nll_images=100, nll_batch=50, seed=0,
                          batch_size=100, kl_threshold=0.01, au_threshold=0.01)
    assert not healthy["collapsed"] and healthy["active_units"] == 2 and healthy["nll_images"] == 100
    assert collapse(2, 2, [0.5, 0.009], 0.01) == ["KL < 0.01 nats in dim 1"]


def test_mutual_information_is_between_zero_and_log_n(trained):
    mu, logvar = posterior_stats(trained, blobs(400, 3), 100)
    mi = mutual_information(mu, logvar, torch.Generator().manual_seed(0), batch_size=200)
    assert 0.1 < mi <= math.log(200)
    # No information: every posterior is N(0, 1), whatever x is.
    zero = mutual_information(torch.zeros(400, 2), torch.zeros(400, 2), torch.Generator().manual_seed(0), 200)
    assert abs(zero) < 0.05
    # Perfectly separated posteriors reach the bound log N.
    sharp = mutual_information(torch.arange(200.0)[:, None] * 10, torch.full((200, 1), -10.0),
                               torch.Generator().manual_seed(0), 200)
    assert abs(sharp - math.log(200)) < 0.1  # up to the Monte Carlo noise of the entropy term
