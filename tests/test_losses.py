import math

import pytest
import torch

import vae.evaluation
from vae.losses import (
    evaluate,
    importance_weighted,
    iwae_objective,
    kl_per_dimension,
    log_importance_weights,
    negative_elbo,
    reconstruction_nll,
    training_objective,
)
from vae.models import build_model


def test_reconstruction_matches_hand_computed_bernoulli_nll():
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    x = torch.tensor([[1.0, 0.0, 0.5]])
    p = 1 / (1 + math.exp(-2.0))
    q = 1 / (1 + math.exp(1.0))
    expected = -math.log(0.5) - math.log(1 - p) - (0.5 * math.log(q) + 0.5 * math.log(1 - q))
    assert math.isclose(reconstruction_nll(logits, x).item(), expected, rel_tol=1e-6)


def test_reconstruction_is_stable_for_extreme_logits():
    out = reconstruction_nll(torch.tensor([[1000.0, -1000.0]]), torch.tensor([[0.0, 1.0]]))
    assert torch.isfinite(out).all() and math.isclose(out.item(), 2000.0, rel_tol=1e-6)


def test_kl_formula():
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]])
    kl = kl_per_dimension(mu, logvar)
    assert kl[0].tolist() == [0.0, 0.0]
    # dim 0: 0.5 * (1 + 4 - 1 - ln 4); dim 1: 0.5 * 4
    assert torch.allclose(kl[1], torch.tensor([0.5 * (4 - math.log(4.0)), 2.0]))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    )
    assert torch.allclose(kl, ref)


def test_negative_elbo_is_recon_plus_kl_per_image():
    torch.manual_seed(0)
    model = build_model("simple_mlp", 2, {"hidden": 8})
    x = torch.rand(4, 1, 28, 28)
    noise = torch.randn(4, 2)
    terms = negative_elbo(model, x, noise)
    assert terms["total"].shape == (4,)
    assert torch.allclose(terms["total"], terms["recon"] + terms["kl"])
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * noise
    assert torch.allclose(terms["recon"], reconstruction_nll(model.decode(z), x))
    q, prior = torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    assert torch.allclose(terms["kl"], torch.distributions.kl_divergence(q, prior).sum(1))


def _terms(kl_dims):
    kl_dims = torch.tensor(kl_dims, requires_grad=True)
    recon = torch.tensor([100.0, 120.0])
    return kl_dims, {"recon": recon, "kl": kl_dims.sum(1), "total": recon + kl_dims.sum(1), "kl_dims": kl_dims}


def test_training_objective_without_remedies_is_the_mean_negative_elbo():
    _, terms = _terms([[1.0, 3.0], [2.0, 5.0]])
    assert training_objective(terms).item() == pytest.approx(110.0 + 5.5)


def test_kl_warmup_scales_only_the_kl_term():
    _, terms = _terms([[1.0, 3.0], [2.0, 5.0]])
    assert training_objective(terms, kl_weight=0.0).item() == pytest.approx(110.0)
    assert training_objective(terms, kl_weight=0.5).item() == pytest.approx(110.0 + 0.5 * 5.5)


def test_free_bits_stop_penalising_a_dimension_below_the_floor():
    # Batch-mean KL: dim 0 = 0.2 nats (below a 0.5 floor), dim 1 = 4 nats (above it).
    kl_dims, terms = _terms([[0.1, 3.0], [0.3, 5.0]])
    loss = training_objective(terms, free_bits=0.5)
    assert loss.item() == pytest.approx(110.0 + 0.5 + 4.0)
    loss.backward()
    assert kl_dims.grad[:, 0].abs().sum() == 0  # no pull towards the prior below the floor
    assert torch.allclose(kl_dims.grad[:, 1], torch.full((2,), 0.5))  # the ELBO's gradient above it


def test_evaluate_gives_the_numbers_it_gave_in_vae_evaluation():
    # Computed with vae.evaluation.evaluate before it moved here (a move, not a change: the
    # train stage's per-epoch test loss and the evaluate stage's -ELBO are unchanged).
    torch.manual_seed(0)
    model = build_model("simple_mlp", 2, {"hidden": 8})
    x = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    before = {"total": 564.3017415364583, "recon": 563.7654968261719, "kl": 0.536254757642746}
    assert evaluate(model, x, 7, seed=3, z_samples=2) == pytest.approx(before, rel=1e-6)
    torch.manual_seed(1)
    model = build_model("conv", 1, {"channels": [4, 8, 8], "hidden": 16})
    before = {"total": 545.6004720052083, "recon": 545.5854817708333, "kl": 0.014998036623001098}
    assert evaluate(model, x, 11, seed=5) == pytest.approx(before, rel=1e-6)
    assert vae.evaluation.evaluate is evaluate  # `from vae.evaluation import evaluate` still works


def iwae_setup(z=2, n=16, seed=0):
    torch.manual_seed(seed)
    model = build_model("simple_mlp", z, {"hidden": 32})
    x = torch.bernoulli(torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed + 1)))
    return model, x


def test_iwae_with_one_sample_is_the_elbo_of_that_sample():
    """At K = 1 the IWAE loss is the single-sample negative ELBO, -log w = recon + log q(z|x) - log p(z), and the
    terms it reports are negative_elbo's for the same noise, to the last bit. Its KL is that sample's estimate,
    not the analytic KL the ELBO objective uses: equal in expectation, checked over many draws below."""
    model, x = iwae_setup()
    noise = torch.randn(len(x), 2, generator=torch.Generator().manual_seed(7))
    terms, log_w = importance_weighted(model, x, noise[None])
    elbo = negative_elbo(model, x, noise)
    for t in ("total", "recon", "kl", "kl_dims"):
        assert torch.equal(terms[t], elbo[t]), t
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * noise
    log_q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    single = elbo["recon"] + log_q - log_p
    assert torch.allclose(iwae_objective(log_w), single.mean(), rtol=0, atol=1e-4)
    # In expectation the sampled KL is the analytic one: the K = 1 loss is the ELBO loss.
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        draws = torch.stack([iwae_objective(importance_weighted(model, x, torch.randn(1, len(x), 2, generator=g))[1])
                             for _ in range(400)])  # fmt: skip
        analytic = torch.stack([training_objective(negative_elbo(model, x, torch.randn(len(x), 2, generator=g)))
                                for _ in range(400)])  # fmt: skip
    se = math.hypot(draws.std().item(), analytic.std().item()) / math.sqrt(400)
    assert abs((draws.mean() - analytic.mean()).item()) < 4 * se, (draws.mean(), analytic.mean(), se)


def test_more_importance_samples_never_give_a_worse_loss_on_the_same_draws():
    model, x = iwae_setup()
    g = torch.Generator().manual_seed(3)
    k5, k1 = [], []
    for _ in range(200):
        eps = torch.randn(5, len(x), 2, generator=g)
        log_w = importance_weighted(model, x, eps)[1].detach()
        k5.append(iwae_objective(log_w))
        k1.append(iwae_objective(log_w[:1]))
        # Jensen, draw by draw: -log mean_k w_k <= mean_k -log w_k.
        assert iwae_objective(log_w).item() <= -log_w.mean(0).mean().item() + 1e-5
    k5, k1 = torch.stack(k5), torch.stack(k1)
    assert k5.mean() < k1.mean() - 3 * (k1 - k5).std() / math.sqrt(200)


def test_iwae_gradients_are_finite():
    model, x = iwae_setup()
    log_w = importance_weighted(model, x, torch.randn(5, len(x), 2, generator=torch.Generator().manual_seed(0)))[1]
    iwae_objective(log_w).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads[: len(grads) // 2])  # the encoder learns from it too


def test_training_and_evaluation_share_the_log_weights(monkeypatch):
    """The IWAE objective and the evaluation's IW bound call one function: on the same draws they agree, and the
    evaluation sees a change to it (a copy of the formula in either place would not)."""
    model, x = iwae_setup()
    eps = torch.randn(10, len(x), 2, generator=torch.Generator().manual_seed(4))
    trained_on = iwae_objective(importance_weighted(model, x, eps)[1])
    bound = vae.evaluation.iw_estimates(model, x, 10, torch.Generator().manual_seed(4), chunk=10)[0]
    assert torch.allclose(bound.mean().float(), trained_on, rtol=0, atol=1e-4)
    calls = []

    def counted(*args):
        calls.append(args[-1].shape)
        return log_importance_weights(*args)

    monkeypatch.setattr(vae.evaluation, "log_importance_weights", counted)
    vae.evaluation.iw_estimates(model, x, 10, torch.Generator().manual_seed(4), chunk=10)
    assert calls == [torch.Size([10, len(x), 2])]
