import pytest
import torch

from vae.config import load_params
from vae.models import FAMILIES, build_model, count_parameters

PARAMS = load_params()


@pytest.mark.parametrize("family", list(FAMILIES))
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


def test_registry_matches_params_and_study_families():
    assert list(FAMILIES) == PARAMS["families"] == ["simple_mlp", "deep_mlp", "conv", "residual"]


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
