import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from vae.config import ParamsError, load_params, runs, train_config, validate, validate_train

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


@pytest.mark.parametrize(
    "path, value, named",
    [
        ("families", ["conv", "transformer"], "'transformer'"),
        (
            "families",
            ["simple_mpl"],
            "(did you mean 'simple_mlp'?); known families: conv, davidson_mlp, deep_mlp, residual, simple_mlp",
        ),
        ("dataset", "mnist", "unknown key 'dataset' (did you mean 'data'?)"),
        ("data.train_subset", 60001, "'data.train_subset' is 60001, but mnist has 60000 training images"),
        ("data.read_timeout_s", 0, "data.read_timeout_s"),
        ("data.timeout_s", 30, "unknown key 'data.timeout_s'"),
        ("data.dataset", "cifar10", "data.dataset"),
        ("latent_dims", [0, 2], "latent_dims"),
        ("train.lr", 0, "train.lr"),
        ("train.lr", -1e-3, "train.lr"),
        ("train.epochs", 0, "train.epochs"),
        ("train.batch_size", 0, "train.batch_size"),
        ("train.lr", "fast", "train.lr"),
        ("train.epochs", 1.5, "train.epochs"),
        ("train.device", "tpu", "train.device"),
        ("seeds", KeyError, "seeds"),
        ("seeds", [0, 0], "'seeds' lists a seed twice"),
        ("seeds", [-1], "seeds"),
        ("train.seed", 0, "unknown key 'train.seed'"),
        ("plot.seed", 5, "'plot.seed' is 5, which is not among 'seeds'"),
        ("data.validation", 60000, "'data.validation' is 60000"),
        ("eval", KeyError, "eval"),
        ("models.conv.channels", [16, 0, 64], "models.conv.channels"),
        ("train.lr_schedule", "linear", "train.lr_schedule"),
        ("train.kl_warmup_epochs", -1, "train.kl_warmup_epochs"),
        ("train.free_bits", -0.5, "train.free_bits"),
        ("recipe.tuned.lr", 0, "recipe.tuned.lr"),
        ("recipe.tuned.free_bits", "lots", "recipe.tuned.free_bits"),
        ("recipe.tuned.lr_schedule", "step", "recipe.tuned.lr_schedule"),
        ("recipes", ["study", "fancy"], "recipe.fancy"),
        ("recipes", ["study", "study"], "recipes"),
        ("recipes", [], "recipes"),
        ("recipe.tuned", [1, 2], "recipe.tuned"),
        ("recipe.tuned.families", [1], "recipe.tuned.families"),
        ("recipe.tuned.families.transformer", {"lr": 0.1}, "recipe.tuned.families.transformer"),
        ("recipe.tuned.families.conv", {"lr": -1}, "recipe.tuned.families.conv.lr"),
        ("recipe.tuned.families.conv", {"lrr": 0.1}, "recipe.tuned.families.conv.lrr"),
        ("recipe.tuned.families.conv", 0.1, "recipe.tuned.families.conv"),
        # Recipe and family names are parts of DVC stage names: letters, digits and '_' only.
        ("recipes", ["study", "fast run"], "recipe name 'fast run' in 'recipes' must be letters, digits and '_' only"),
        ("recipes", ["study", "tuned-2"], "recipe name 'tuned-2' in 'recipes'"),
        ("recipe.fast run", {}, "recipe name 'fast run' in 'recipe'"),
        ("families", ["conv", "conv-net"], "family name 'conv-net' in 'families'"),
        ("train.binarize", "static", "'train.binarize' is 'static'; allowed: none, dynamic"),
        ("train.binarize", None, "'train.binarize' is None; allowed: none, dynamic"),
        ("train.binarize", KeyError, "missing key 'train.binarize'"),
        ("recipe.binarized.binarize", True, "'recipe.binarized.binarize' is True; allowed: none, dynamic"),
        ("recipe.tuned.families.conv", {"binarize": "yes"}, "'recipe.tuned.families.conv.binarize' is 'yes'"),
        ("eval.nll_images", 1, "'eval.nll_images' must be an integer >= 2 or null, got 1"),
        ("eval.nll_batch", 0, "'eval.nll_batch' must be an integer >= 1, got 0"),
    ],
)
def test_bad_params_name_the_key(path, value, named):
    with pytest.raises(ParamsError) as e:
        validate(broken(path, value))
    assert named in str(e.value)
    assert "\n" not in str(e.value)


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    YAML().dump(broken("train.lr", -1), path.open("w"))
    with pytest.raises(ParamsError, match=r"p\.yaml: 'train\.lr' must be a number > 0, got -1$"):
        load_params(path)


def test_mistyped_key_suggests_the_right_one():
    p = copy.deepcopy(BASE)
    p["train"]["lrr"] = p["train"].pop("lr")
    with pytest.raises(ParamsError, match=r"unknown key 'train.lrr' \(did you mean 'train.lr'\?\)"):
        validate(p)


def test_mistyped_recipe_key_suggests_the_train_key():
    p = copy.deepcopy(BASE)
    p["recipe"]["tuned"]["kl_warmup"] = 3
    with pytest.raises(
        ParamsError,
        match=r"unknown key 'recipe.tuned.kl_warmup' "
        r"\(did you mean 'recipe.tuned.kl_warmup_epochs'\?\)",
    ):
        validate(p)


@pytest.mark.parametrize("name", ["fast run", "fast-run", "lr=1e-3", "tuned.v2", "réglé"])
def test_a_recipe_name_that_cannot_name_a_dvc_stage_is_refused(name):
    # Defined and listed, so nothing else is wrong: without the rule `fast run` passed check and the
    # train stage then failed on its command line (`python -m stages.train fast run conv 2 0`).
    p = copy.deepcopy(BASE)
    p["recipes"].append(name)
    p["recipe"][name] = {"epochs": 1}
    with pytest.raises(
        ParamsError,
        match=f"^recipe name {re.escape(repr(name))} in 'recipes' must be letters, "
        r"digits and '_' only: it is part of DVC stage names",
    ):
        validate(p)
    p["recipes"].remove(name)
    with pytest.raises(ParamsError, match=f"^recipe name {re.escape(repr(name))} in 'recipe' "):
        validate(p)  # defined only: its key still could not name a stage


def test_recipe_names_of_letters_digits_and_underscores_pass():
    p = copy.deepcopy(BASE)
    p["recipes"].append("Tuned_2")
    p["recipe"]["Tuned_2"] = {"epochs": 1}
    validate(p)


def test_a_recipe_overrides_train_and_the_study_overrides_nothing():
    for family in BASE["families"]:
        assert train_config(BASE, "study", family, 2) == {**BASE["train"], "seed": 2}
    p = copy.deepcopy(BASE)
    p["recipe"]["tuned"] = {"lr": 1e-3, "free_bits": 0.5, "families": {"simple_mlp": {"lr": 3e-3, "epochs": 7}}}
    conv, mlp = train_config(p, "tuned", "conv", 0), train_config(p, "tuned", "simple_mlp", 1)
    assert "families" not in conv and "families" not in mlp
    assert {k for k in conv if conv[k] != BASE["train"].get(k)} == {"lr", "free_bits", "seed"} and conv["lr"] == 1e-3
    assert (mlp["lr"], mlp["epochs"], mlp["free_bits"], mlp["seed"]) == (3e-3, 7, 0.5, 1)
    assert runs(BASE)[0] == ("study", BASE["families"][0], BASE["latent_dims"][0], BASE["seeds"][0])
    per_cell = len(BASE["latent_dims"]) * len(BASE["seeds"])
    full = len(BASE["recipes"]) * len(BASE["families"]) * per_cell
    subset = len(BASE["subset_recipes"]) * len(BASE["subset_families"]) * per_cell
    assert subset and len(runs(BASE)) == full + subset
    # The subset recipes' runs come after the full matrix's, on their families alone, as dvc.yaml lists them.
    assert {(r, f) for r, f, _, _ in runs(BASE)[full:]} == {
        (r, f) for r in BASE["subset_recipes"] for f in BASE["subset_families"]
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"subset_recipes": ["binarized"]}, "recipe 'binarized' is in both 'recipes' and 'subset_recipes'"),
        ({"subset_recipes": ["nope"]}, "'subset_recipes' lists 'nope' but 'recipe.nope' is not defined"),
        ({"subset_recipes": ["iwae", "iwae"]}, "'subset_recipes' lists a recipe twice"),
        ({"subset_families": []}, "'subset_families' is empty: name the families they run on"),
        (
            {"subset_families": ["deep_mpl"]},
            "'subset_families' has unknown family 'deep_mpl' (did you mean 'deep_mlp'?)",
        ),
        ({"subset_families": ["conv", "conv"]}, "'subset_families' lists a family twice"),
    ],
)
def test_bad_subset_recipes_are_refused_with_the_key(change, message):
    p = {**copy.deepcopy(BASE), **change}
    with pytest.raises(ParamsError) as e:
        validate(p)
    assert message in str(e.value)


def test_no_subset_recipe_is_a_valid_study():
    validate({**copy.deepcopy(BASE), "subset_recipes": [], "subset_families": []})


def test_the_binarized_recipe_is_the_tuned_one_on_binarized_images():
    # The YAML merge in params.yaml copies the tuned recipe, its per-family settings included.
    for family in BASE["families"]:
        for seed in BASE["seeds"]:
            tuned = train_config(BASE, "tuned", family, seed)
            assert train_config(BASE, "binarized", family, seed) == {**tuned, "binarize": "dynamic"}
            assert tuned["binarize"] == "none" and train_config(BASE, "study", family, seed)["binarize"] == "none"
    assert BASE["recipes"] == ["study", "tuned", "binarized"] and len(runs(BASE)) == 90 + 12  # and iwae on 2 MLPs


def test_yaml_1_2_reads_exponent_floats(tmp_path):
    # PyYAML (YAML 1.1) would read 1e-3 as the string "1e-3".
    text = tmp_path / "p.yaml"
    y = YAML()
    p = copy.deepcopy(BASE)
    y.dump(p, text.open("w"))
    text.write_text(text.read_text().replace("lr: 0.01", "lr: 1e-3"))
    assert load_params(text)["train"]["lr"] == 0.001


def test_defaults_are_the_study_protocol():
    assert BASE["train"]["lr"] == 0.01 and BASE["train"]["epochs"] == 50
    # Every collapse remedy is off in the study's protocol.
    assert BASE["train"]["lr_schedule"] == "constant" and BASE["train"]["kl_warmup_epochs"] == 0
    assert BASE["train"]["free_bits"] == 0 and BASE["recipes"][0] == "study" and not BASE["recipe"]["study"]
    assert BASE["train"]["optimizer"] == "adam" and BASE["train"]["binarize"] == "none"  # grey-level targets
    assert BASE["latent_dims"] == [1, 2]
    assert BASE["data"]["local_mirror"] is None  # the offline mirror is configuration, never a default


def stage(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, capture_output=True, text=True)


def test_check_with_bad_params_prints_the_message_not_a_traceback(tmp_path):
    YAML().dump(broken("train.lr", -0.01), (tmp_path / "params.yaml").open("w"))
    r = stage(tmp_path, "stages.check")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == "check: params.yaml: 'train.lr' must be a number > 0, got -0.01", r.stderr
    assert not any(p.name != "params.yaml" for p in tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("argv", [["download"], ["train", "study", "conv", "2", "0"], ["compare"]])
def test_a_stage_run_before_check_says_to_run_check(tmp_path, argv):
    # Only check validates params.yaml (the others do not import the validation, so an edit to it reruns
    # check alone): a stage run by hand before check ever ran says so, in one line, and writes nothing.
    YAML().dump(broken("train.lr", -0.01), (tmp_path / "params.yaml").open("w"))
    r = stage(tmp_path, f"stages.{argv[0]}", *argv[1:])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (
        f"{argv[0]}: checks/params.ok is missing: params.yaml has not been validated; run `dvc repro check`"
    )
    assert not any(p.name != "params.yaml" for p in tmp_path.iterdir())


def test_train_reads_what_check_resolved_for_it(tmp_path):
    """train@ reads checks/settings/RECIPE-FAMILY.json, not params.yaml's sections: its only dependency on
    params, so another family's or recipe's change leaves it up to date."""
    (tmp_path / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert stage(tmp_path, "stages.check").returncode == 0
    s = json.loads((tmp_path / "checks" / "settings" / "tuned-conv.json").read_text())
    assert s == {
        "data": {"dataset": BASE["data"]["dataset"], "train_subset": BASE["data"]["train_subset"]},
        "eval": {"seed": BASE["eval"]["seed"], "batch_size": BASE["eval"]["batch_size"]},
        "model": BASE["models"]["conv"],
        "train": {
            k: v
            for k, v in sorted(train_config(BASE, "tuned", "conv", 0).items())
            if k not in ("seed", "iw_train_samples")
        },
    }
    assert s["train"]["lr"] == 0.003  # tuned's per-family override
    # train.iw_train_samples (the IWAE's K) is left out of an ELBO run's settings: sweeping K reruns IWAE runs alone.
    p = YAML().load((tmp_path / "params.yaml").read_text())
    p["train"]["iw_train_samples"] = 7
    p["recipe"]["iw"] = {"objective": "iwae", "binarize": "dynamic"}
    p["recipes"].append("iw")
    YAML().dump(p, (tmp_path / "params.yaml").open("w"))
    assert stage(tmp_path, "stages.check").returncode == 0
    assert json.loads((tmp_path / "checks" / "settings" / "tuned-conv.json").read_text()) == s
    assert json.loads((tmp_path / "checks" / "settings" / "iw-conv.json").read_text())["train"]["iw_train_samples"] == 7
    # A subset recipe's settings are written for its subset families alone (the runs it has).
    settings = tmp_path / "checks" / "settings"
    assert json.loads((settings / "iwae-deep_mlp.json").read_text())["train"]["iw_train_samples"] == 7
    assert {f.name for f in settings.glob("iwae-*")} == {f"iwae-{f}.json" for f in BASE["subset_families"]}
    (tmp_path / "checks" / "settings" / "tuned-conv.json").unlink()
    r = stage(tmp_path, "stages.train", "tuned", "conv", "2", "0")
    assert r.stderr.strip() == (
        "train: checks/settings/tuned-conv.json: not found; run `dvc repro check` "
        "(the stage that validates params.yaml writes it)"
    )


@pytest.mark.parametrize(
    "over, named",
    [
        (
            {"objective": "iwae", "kl_warmup_epochs": 0},
            "'recipe.tuned.free_bits' is 0.5, but the objective of recipe tuned",
        ),
        ({"objective": "iwae", "free_bits": 0.0}, "'recipe.tuned.kl_warmup_epochs' is 5, but the objective of recipe"),
        (
            {"objective": "iwae", "free_bits": 0.0, "kl_warmup_epochs": 0, "iw_train_samples": 0},
            "recipe.tuned.iw_train_samples",
        ),
        ({"objective": "iw"}, "'recipe.tuned.objective' is 'iw'; allowed: elbo, iwae"),
    ],
)
def test_the_iwae_objective_refuses_elbo_only_settings(over, named):
    # Warm-up and free bits act on the ELBO's KL term, which the importance-weighted bound has none of.
    p = copy.deepcopy(BASE)
    p["recipe"]["tuned"] = {**p["recipe"]["tuned"], **over}
    with pytest.raises(ParamsError) as e:
        validate(p)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_an_iwae_recipe_without_warm_up_or_free_bits_passes():
    p = copy.deepcopy(BASE)
    p["recipe"]["iw"] = {"objective": "iwae", "iw_train_samples": 5, "binarize": "dynamic"}
    p["recipes"].append("iw")
    validate(p)


def test_a_pilots_settings_with_iwae_and_free_bits_are_refused():
    settings = {**train_config(BASE, "tuned", "deep_mlp", 0), "objective": "iwae", "kl_warmup_epochs": 0}
    with pytest.raises(ParamsError, match=r"^'free_bits' is 0.5, but the objective is iwae"):
        validate_train(settings)
    validate_train({**settings, "free_bits": 0})  # the seed, which a run's settings carry, is no error
