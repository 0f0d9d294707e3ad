import pytest
import torch

from vae.config import load_params
from vae.models import build_model, count_parameters, known_families, load_all

PARAMS = load_params()


@pytest.mark.parametrize("family", known_families())
@pytest.mark.parametrize("z", [1, 2])
def test_every_family_has_the_shared_interface(family, z):
    model = build_model(family, z, PARAMS["models"][family])
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, z)
    assert model.decode(mu).shape == (5, 1, 28, 28)
    logits, mu2, _ = model(x)
    assert logits.shape == (5, 1, 28, 28) and torch.equal(mu, mu2)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, x)
    loss.backward()  # every parameter takes part in the computation
    assert all(p.grad is not None for p in model.parameters())


def test_registry_is_one_file_per_family_and_matches_params():
    assert sorted(load_all()) == known_families() == sorted(PARAMS["families"])
    assert PARAMS["families"] == ["simple_mlp", "deep_mlp", "conv", "residual", "davidson_mlp"]
    for name, fam in load_all().items():
        assert fam.build.__module__ == f"vae.families.{name}" and set(fam.params) == set(PARAMS["models"][name])


def test_a_family_registered_under_another_files_name_is_refused():
    from vae.models import register

    with pytest.raises(ValueError, match="must be registered from vae/families/conv2.py"):
        register("conv2")(lambda z: None)


def test_the_davidson_network_is_theirs():
    # 784-256-128 ReLU, heads for mean and (softplus) scale, mirrored decoder: 468,496 + 386 z parameters,
    # as counted from their examples/mnist.py (vae/families/davidson_mlp.py).
    for z in (1, 2):
        model = build_model("davidson_mlp", z, PARAMS["models"]["davidson_mlp"])
        assert count_parameters(model) == 468_496 + 386 * z
        assert [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)] == [256, 128, 2 * z]
        assert [m.out_features for m in model.decoder if isinstance(m, torch.nn.Linear)] == [128, 256, 784]
    # Its scale is a softplus, handed on as a log-variance: 2 log softplus(raw), finite far below zero.
    from vae.families.davidson_mlp import SoftplusScale

    raw = torch.tensor([[0.0, 0.0, -200.0, 3.0]], requires_grad=True)
    out = SoftplusScale()(raw)
    assert torch.allclose(out[0, 3], 2 * torch.nn.functional.softplus(torch.tensor(3.0)).log())
    assert out[0, 2] == -400.0  # 2 * raw: softplus(raw) ~ exp(raw) there
    out.sum().backward()
    assert torch.isfinite(raw.grad).all()


def test_architectures_follow_the_study():
    simple = build_model("simple_mlp", 2, {"hidden": 400})
    assert [m.out_features for m in simple.encoder if isinstance(m, torch.nn.Linear)] == [400, 4]
    deep = build_model("deep_mlp", 2, {"hidden": [512, 256, 128]})
    assert [m.out_features for m in deep.encoder if isinstance(m, torch.nn.Linear)] == [512, 256, 128, 4]
    assert [m.out_features for m in deep.decoder if isinstance(m, torch.nn.Linear)] == [128, 256, 512, 784]
    conv = build_model("conv", 2, PARAMS["models"]["conv"])
    kinds = [type(m).__name__ for m in conv.modules()]
    assert kinds.count("Conv2d") == 3 and kinds.count("ConvTranspose2d") == 3
    res = build_model("residual", 2, PARAMS["models"]["residual"])
    assert any(type(m).__name__ == "ResBlock" for m in res.modules())


def test_parameter_counts_are_reported():
    assert count_parameters(build_model("simple_mlp", 1, {"hidden": 10})) == (784 * 10 + 10 + 10 * 2 + 2) + (
        1 * 10 + 10 + 10 * 784 + 784
    )
