import copy

import pytest
from ruamel.yaml import YAML

from vae.config import ParamsError, load_params, validate

BASE = load_params()


def broken(path: str, value):
    p = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    d = p
    for k in parents:
        d = d[k]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value
    return p


@pytest.mark.parametrize("path, value, named", [
    ("families", ["conv", "transformer"], "'transformer'"),
    ("data.dataset", "cifar10", "data.dataset"),
    ("latent_dims", [0, 2], "latent_dims"),
    ("train.lr", 0, "train.lr"),
    ("train.lr", -1e-3, "train.lr"),
    ("train.epochs", 0, "train.epochs"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.lr", "fast", "train.lr"),
    ("train.epochs", 1.5, "train.epochs"),
    ("train.device", "tpu", "train.device"),
    ("train.seed", KeyError, "train.seed"),
    ("eval", KeyError, "eval"),
    ("models.conv.channels", [16, 0, 64], "models.conv.channels"),
])
def test_bad_params_name_the_key(path, value, named):
    with pytest.raises(ParamsError) as e:
        validate(broken(path, value))
    assert named in str(e.value)
    assert "\n" not in str(e.value)


def test_mistyped_key_suggests_the_right_one():
    p = copy.deepcopy(BASE)
    p["train"]["lrr"] = p["train"].pop("lr")
    with pytest.raises(ParamsError, match=r"unknown key 'train.lrr' \(did you mean 'train.lr'\?\)"):
        validate(p)


def test_yaml_1_2_reads_exponent_floats(tmp_path):
    # PyYAML (YAML 1.1) would read 1e-3 as the string "1e-3".
    text = (tmp_path / "p.yaml")
    y = YAML()
    p = copy.deepcopy(BASE)
    y.dump(p, text.open("w"))
    text.write_text(text.read_text().replace("lr: 0.01", "lr: 1e-3"))
    assert load_params(text)["train"]["lr"] == 0.001


def test_defaults_are_the_study_protocol():
    assert BASE["train"]["lr"] == 0.01 and BASE["train"]["epochs"] == 50
    assert BASE["train"]["optimizer"] == "adam"
    assert BASE["latent_dims"] == [1, 2]
    assert BASE["data"]["local_mirror"] is None  # the offline mirror is configuration, never a default
