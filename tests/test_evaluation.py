import math

import pytest
import torch
from torch.distributions import Normal

import vae.evaluation
from tests.test_training import SETTINGS, data
from vae.data import binarize
from vae.evaluation import (
    active_units,
    collapse,
    elbo_gap,
    full_report,
    iw_estimates,
    mean_kl_per_dimension,
    mutual_information,
    mutual_information_se,
    posterior_stats,
)
from vae.losses import evaluate, reconstruction_nll
from vae.models import VAE, build_model
from vae.training import train


def blobs(n, seed=0):
    """Images of a Gaussian blob at a random position: two real factors of variation."""
    g = torch.Generator().manual_seed(seed)
    centre = 6 + 16 * torch.rand(n, 2, 1, 1, generator=g)
    grid = torch.arange(28.0)
    img = torch.exp(-((grid[None, :, None] - centre[:, 0]) ** 2 + (grid[None, None, :] - centre[:, 1]) ** 2) / 8)
    return img[:, None]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    model, _ = train(
        "simple_mlp-2",
        "simple_mlp",
        2,
        {"hidden": 64},
        {**SETTINGS, "epochs": 5, "lr": 3e-3},
        blobs(1000),
        blobs(50, 1),
        checkpoint=tmp / "c.pt",
        log_dir=tmp / "l",
        eval_seed=1,
        eval_batch_size=50,
        fingerprint="x",
    )
    return model.eval()


def iw_bound(*args, **kwargs) -> torch.Tensor:
    """The per-image importance-weighted bound alone."""
    return iw_estimates(*args, **kwargs)[0]


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


def report_of(model, x, **kw) -> dict:
    """full_report with the thresholds params.yaml sets (KL 0.01 nats, activity variance 0.01)."""
    return full_report(model, x, kl_threshold=0.01, au_threshold=0.01, **kw)


def test_iw_bound_with_one_sample_is_the_single_sample_elbo(trained):
    x = data(20, 2)
    bound = iw_bound(trained, x, 1, torch.Generator().manual_seed(5))
    eps = torch.randn(1, 20, 2, generator=torch.Generator().manual_seed(5))[0]
    mu, logvar = trained.encode(x)
    q = Normal(mu, (0.5 * logvar).exp())
    zs = q.loc + q.scale * eps
    mc_elbo = reconstruction_nll(trained.decode(zs), x) + q.log_prob(zs).sum(1) - Normal(0.0, 1.0).log_prob(zs).sum(1)
    assert torch.allclose(bound, mc_elbo.double(), rtol=1e-5, atol=1e-3)


def test_iw_bound_with_one_sample_averages_to_the_analytic_kl_elbo(trained):
    # Both sides seeded: nothing depends on the global RNG, so on which tests ran before.
    # The standard error of each side is ~0.03 nats; a KL off by a constant is off by >= 1.
    x = blobs(20, 2)
    many = torch.stack([iw_bound(trained, x, 1, torch.Generator().manual_seed(s)) for s in range(300)]).mean()
    assert many.item() == pytest.approx(evaluate(trained, x, 20, seed=0, z_samples=300)["total"], abs=0.2)


def test_iw_bound_does_not_increase_with_more_samples(trained):
    x = data(30, 3)
    bound = {k: iw_bound(trained, x, k, torch.Generator().manual_seed(0), chunk=64).mean().item() for k in (1, 10, 500)}
    assert bound[500] <= bound[10] <= bound[1]


def test_chunked_iw_estimates_equal_one_chunk_on_the_same_draws(trained):
    # 8 images x z=2 is 16 normals per sample, a whole block of torch's vectorised CPU sampler,
    # so [98, 8, 2] then [2, 8, 2] consume the same stream as one [100, 8, 2]: every chunking
    # below sees the same draws, and only the folding of chunks can make the estimates differ.
    k, x = 100, blobs(8, 4)
    g = torch.Generator().manual_seed(0)
    pieces = torch.cat([torch.randn(n, 8, 2, generator=g) for n in [7] * 14 + [2]])
    assert torch.equal(pieces, torch.randn(k, 8, 2, generator=torch.Generator().manual_seed(0)))
    whole = iw_estimates(trained, x, k, torch.Generator().manual_seed(0), chunk=k)
    for chunk in (1, 7, 64):
        chunked = iw_estimates(trained, x, k, torch.Generator().manual_seed(0), chunk=chunk)
        assert all(torch.allclose(c, w, rtol=0, atol=1e-3) for c, w in zip(chunked[:2], whole[:2])), chunk


def exact_nll(model, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) = -log ∫ p(x|z) p(z) dz of a z=1 model, per image, as a Riemann sum over a fine grid of z."""
    z = torch.linspace(-10.0, 10.0, 4001)
    with torch.no_grad():
        log_joint = torch.stack(
            [-reconstruction_nll(model.decode(z[:, None]), xi.expand(len(z), -1, -1, -1)) for xi in x]
        ) + Normal(0.0, 1.0).log_prob(z)
    # The grid must hold the posterior and resolve it: its ends carry no mass, its step << the posterior's std.
    posterior = log_joint.softmax(1)
    mean = (posterior * z).sum(1)
    assert posterior[:, [0, -1]].max() < 1e-12 and ((posterior * (z - mean[:, None]) ** 2).sum(1).sqrt() > 0.1).all()
    return -(torch.logsumexp(log_joint, 1) + math.log(z[1] - z[0]))


def one_dimensional_model() -> VAE:
    torch.manual_seed(0)
    model = build_model("simple_mlp", 1, {"hidden": 32}).eval()
    with torch.no_grad():  # q(z|x) of std 0.5: a proposal twice as wide as the posterior (std ~0.25)
        model.encoder[-1].bias[1] = 2 * math.log(0.5)
    return model


def test_iw_bound_converges_to_the_exact_marginal_of_a_one_dimensional_model():
    model, x = one_dimensional_model(), blobs(3, 2)
    bound = iw_bound(model, x, 2000, torch.Generator().manual_seed(0))
    assert (bound - exact_nll(model, x)).abs().max() < 0.1  # ~5 standard deviations of the K=2000 estimate


def test_on_binarized_images_the_bound_falls_with_k_towards_the_exact_nll_and_stays_above_it():
    # On 0/1 targets p(x|z) is a normalised Bernoulli likelihood, so -log p(x) is a true NLL, and the IW bound
    # bounds it from above: E[bound_K] >= E[bound_2K] >= -log p(x), the bound falling towards it as K grows.
    model, x = one_dimensional_model(), binarize(blobs(4, 2), torch.Generator().manual_seed(0))
    exact = exact_nll(model, x)
    # The mean over 50 seeds of each K's bound: one estimate has noise, the expectation falls with K. (Each seed's
    # smaller K draws the first samples of its larger K, so the differences are far steadier than the bounds.)
    bounds = {
        k: torch.stack([iw_bound(model, x, k, torch.Generator().manual_seed(s)) for s in range(50)]).mean(0)
        for k in (1, 4, 16, 1000)
    }
    gaps = {k: (b - exact).mean().item() for k, b in bounds.items()}  # nats above the exact NLL
    assert gaps[1] > gaps[4] > gaps[16] > gaps[1000] > -0.005, gaps
    assert gaps[1] > 0.3 and abs(gaps[1000]) < 0.005, gaps  # a real gap at K=1, closed at K=1000
    assert ((bounds[1000] - exact) > -0.02).all()  # image by image too, up to the Monte Carlo noise


def test_the_bounds_standard_error_is_over_the_images_it_averages(trained):
    x = binarize(blobs(60, 4), torch.Generator().manual_seed(1))
    report = report_of(trained, x, iw_samples=20, iw_images=None, iw_batch=7, seed=3, batch_size=60)
    g = torch.Generator().manual_seed(3)  # all images: the generator draws the K samples only, batch by batch
    per_image = torch.cat([iw_bound(trained, xb, 20, g) for xb in x.split(7)])
    assert report["iw_bound"] == pytest.approx(per_image.mean().item(), abs=1e-9)
    assert report["iw_bound_se"] == pytest.approx((per_image.std() / math.sqrt(60)).item(), rel=1e-9)


def test_active_units_count_a_dead_dimension():
    model = dead_dimension_model(z=3, dead=1)
    mu, logvar = posterior_stats(model, data(300), 100)
    assert active_units(mu, 0.01) == 2
    kl = mean_kl_per_dimension(mu, logvar)
    assert kl[1] == 0.0 and kl[0] > 0 and kl[2] > 0


def test_collapse_flag_fires_on_collapsed_run_only(trained):
    sick = report_of(
        dead_dimension_model(z=2, dead=0), data(200), iw_samples=5, iw_images=None, iw_batch=100, seed=0, batch_size=100
    )
    assert sick["collapsed"] and sick["active_units"] == 1
    assert sick["collapse_reasons"] == ["1/2 active units", "KL < 0.01 nats in dim 0"]
    healthy = report_of(trained, blobs(200, 2), iw_samples=5, iw_images=100, iw_batch=50, seed=0, batch_size=100)
    assert not healthy["collapsed"] and healthy["active_units"] == 2 and healthy["iw_images"] == 100
    assert collapse(2, 2, [0.5, 0.009], 0.01) == ["KL < 0.01 nats in dim 1"]


def test_elbo_gap_compares_elbo_and_iw_bound_on_the_same_images(trained):
    # Half the images are blobs (~85 nats), half inverted blobs (thousands): a gap taken between
    # different sets of images is off by thousands; on the same images it is a fraction of a nat.
    x = torch.cat([blobs(50, 5), 1 - blobs(50, 6)])[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    report = report_of(trained, x, iw_samples=5, iw_images=10, iw_batch=50, seed=0, batch_size=100)
    assert report["iw_images"] == 10 and 0 <= report["elbo_gap"] < 1.0
    assert report["subset_total"] - report["iw_bound"] == pytest.approx(report["elbo_gap"], abs=1e-4)


def test_bound_and_elbo_come_from_the_same_samples_so_the_gap_is_never_negative(trained):
    # K = 5 draws taken one at a time are the draws of five K = 1 calls on the same generator: the
    # -ELBO is their mean, the bound their -log-mean-exp, and the gap >= 0 image by image (Jensen).
    x = blobs(40, 9)
    bound, neg_elbo, _ = iw_estimates(trained, x, 5, torch.Generator().manual_seed(3), chunk=1)
    g = torch.Generator().manual_seed(3)
    singles = torch.stack([iw_estimates(trained, x, 1, g)[1] for _ in range(5)])  # [5, 40]: -log w_k
    assert torch.allclose(neg_elbo, singles.mean(0), rtol=0, atol=1e-9)
    assert torch.allclose(bound, -(torch.logsumexp(-singles, 0) - math.log(5)), rtol=0, atol=1e-9)
    assert ((neg_elbo - bound) >= 0).all() and ((neg_elbo - bound) > 0).any()
    # With a handful of samples the gap is small next to the noise of one draw: a gap taken from two
    # independent estimates (a single-draw -ELBO minus the bound) comes out negative for some images.
    reports = [report_of(trained, x, iw_samples=2, iw_images=1, iw_batch=1, seed=s, batch_size=40) for s in range(20)]
    assert all(r["elbo_gap"] >= 0 for r in reports), [r["elbo_gap"] for r in reports]


def test_the_bound_at_the_published_k_is_the_first_k_of_the_same_draws(trained):
    # K = 1000 with the bound at 500 as well: the 1000-sample figures are those of a call without it (the
    # same draws, 500 being a whole number of chunks), and the 500-sample bound that of a K = 500 call.
    x = blobs(20, 4)
    bound, neg_elbo, at_500 = iw_estimates(trained, x, 1000, torch.Generator().manual_seed(5), also=500)
    alone = iw_estimates(trained, x, 1000, torch.Generator().manual_seed(5))
    assert torch.equal(bound, alone[0]) and torch.equal(neg_elbo, alone[1]) and alone[2] is None
    assert torch.equal(at_500, iw_estimates(trained, x, 500, torch.Generator().manual_seed(5))[0])
    # A K that is not a whole number of chunks ends a chunk there: still the first K of the draws.
    _, _, at_250 = iw_estimates(trained, x, 1000, torch.Generator().manual_seed(5), chunk=200, also=250)
    first = iw_estimates(trained, x, 250, torch.Generator().manual_seed(5), chunk=200)[0]
    assert torch.allclose(at_250, first, rtol=0, atol=1e-9)
    report = report_of(trained, x, iw_samples=1000, iw_images=None, iw_batch=20, iw_also=500, seed=5, batch_size=20)
    first_500 = iw_estimates(trained, x, 500, torch.Generator().manual_seed(5), chunk=100)[0]
    assert report["iw_bound_also"] == pytest.approx(first_500.mean().item(), abs=1e-9)
    assert report["iw_bound_also_se"] == pytest.approx((first_500.std() / math.sqrt(20)).item(), abs=1e-9)
    with pytest.raises(ValueError, match="needs 1 <= 1000 < K=1000"):
        iw_estimates(trained, x, 1000, torch.Generator(), also=1000)


def test_a_negative_elbo_gap_is_an_error_not_a_zero(trained, monkeypatch):
    """The gap is >= 0 image by image (Jensen): only float rounding below 1e-6 nats is set to 0. A bound
    above the -ELBO of its own samples is a wrong estimator, which clamping would hide."""
    assert elbo_gap(torch.tensor([5.0, 2.0]), torch.tensor([5.0 + 1e-9, 1.0])).tolist() == [0.0, 1.0]
    real = vae.evaluation.iw_estimates

    def planted(*args, **kwargs):  # an estimator whose bound is 0.01 nats above the -ELBO
        bound, neg_elbo, also = real(*args, **kwargs)
        return neg_elbo + 0.01, neg_elbo, also

    monkeypatch.setattr(vae.evaluation, "iw_estimates", planted)
    with pytest.raises(ValueError, match=r"ELBO gap of -0.01 nats on an image: .* the estimator is wrong"):
        report_of(trained, blobs(20, 4), iw_samples=5, iw_images=None, iw_batch=10, seed=0, batch_size=20)


def collapsed_model(z=2):
    """Posterior = prior for every x, and a decoder that ignores z: the ELBO is exact."""
    model = dead_dimension_model(z=z, dead=0)
    with torch.no_grad():
        for row in range(2 * z):
            model.encoder[-1].weight[row].zero_()
            model.encoder[-1].bias[row] = 0.0
        model.decoder[0].weight.zero_()  # the first layer sees z: now nothing downstream does
    return model


def test_elbo_gap_is_zero_when_the_decoder_ignores_z():
    report = report_of(
        collapsed_model(), blobs(100, 7), iw_samples=50, iw_images=40, iw_batch=20, seed=0, batch_size=50
    )
    assert abs(report["elbo_gap"]) < 1e-3 and report["collapsed"]


def test_elbo_gap_is_positive_for_a_model_that_uses_z(trained):
    gaps = [
        report_of(trained, blobs(60, 8), iw_samples=100, iw_images=60, iw_batch=30, seed=s, batch_size=60)["elbo_gap"]
        for s in range(3)
    ]
    assert all(g > 0 for g in gaps), gaps


def test_mutual_information_is_between_zero_and_log_n(trained):
    mu, logvar = posterior_stats(trained, blobs(400, 3), 100)
    mi = mutual_information(mu, logvar, torch.Generator().manual_seed(0), chunk=64)
    assert 0.1 < mi <= math.log(400)
    # No information: every posterior is N(0, 1), whatever x is.
    zero = mutual_information(torch.zeros(400, 2), torch.zeros(400, 2), torch.Generator().manual_seed(0))
    assert abs(zero) < 0.05


def test_a_collapsed_runs_negative_mi_is_monte_carlo_noise_within_its_standard_error():
    """Posteriors that all equal the prior carry no information: the estimate scatters around 0 by its SE
    (analytically sqrt(d / 2 / N): each image's term is (z^2 - 1) d / 2 for z ~ N(0, 1)), below 0 for
    some draws; it is the value `mutual_information` gives, with the noise it comes with."""
    n, d = 1000, 2
    draws = [
        mutual_information_se(torch.zeros(n, d), torch.zeros(n, d), torch.Generator().manual_seed(s)) for s in range(12)
    ]
    assert any(mi < 0 for mi, _ in draws) and any(mi > 0 for mi, _ in draws)
    for seed, (mi, se) in enumerate(draws):
        assert se == pytest.approx(math.sqrt(d / 2 / n), rel=0.25)
        assert abs(mi) < 4 * se
        assert mi == mutual_information(torch.zeros(n, d), torch.zeros(n, d), torch.Generator().manual_seed(seed))


def test_mutual_information_mixes_every_posterior_not_a_minibatch():
    # Separated posteriors: z tells which of the N images x is, so I(x; z) = H(x) = log N exactly,
    # here log 3000 = 8.01 nats: a mixture over batches of 1000 could not exceed log 1000 = 6.91.
    n = 3000
    sharp = mutual_information(
        torch.arange(float(n))[:, None] * 10, torch.full((n, 1), -10.0), torch.Generator().manual_seed(0)
    )
    assert abs(sharp - math.log(n)) < 0.05  # up to the Monte Carlo noise of the entropy term


def test_mutual_information_of_a_gaussian_channel_has_its_closed_form():
    # x uniform over 10,000 images whose posterior means are the standard normal's quantiles (in a fixed
    # shuffled order), posterior variance s2: the aggregate posterior is N(0, 1 + s2), and
    # I(x; z) = 0.5 log(1 + 1 / s2) = 5.76 nats for s2 = 1e-5, below log N but near log 1000 = 6.91,
    # where a mixture over batches of 1000 underestimates it by 0.23 nats.
    n, s2 = 10_000, 1e-5
    quantiles = Normal(0.0, 1.0).icdf((torch.arange(n, dtype=torch.float64) + 0.5) / n).float()
    mu = quantiles[torch.randperm(n, generator=torch.Generator().manual_seed(0))][:, None]
    mi = mutual_information(mu, torch.full((n, 1), math.log(s2)), torch.Generator().manual_seed(1))
    assert mi == pytest.approx(0.5 * math.log(1 + 1 / s2), abs=0.03)
