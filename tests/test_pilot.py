import json
from pathlib import Path

import pytest

from benchmarks.pilot import KEYS, parse_overrides, table
from vae.config import load_params, train_config


def test_overrides_are_read_as_params_yaml_reads_them():
    # YAML 1.2: PyYAML would read 5e-4 as a string and the run would fail an hour later.
    assert parse_overrides(["lr=5e-4", "batch_size=64", "grad_clip=null", "lr_schedule=cosine"]) == {
        "lr": 0.0005,
        "batch_size": 64,
        "grad_clip": None,
        "lr_schedule": "cosine",
    }


@pytest.mark.parametrize("item", ["batchsize=64", "lr", "=1"])
def test_an_unknown_or_malformed_override_names_the_allowed_keys(item):
    with pytest.raises(SystemExit, match="KEY among: optimizer, lr, "):
        parse_overrides([item])


def test_table_reads_each_pilot_against_params_yaml_as_it_is_now(tmp_path, capsys):
    params = load_params()
    now = train_config(params, "tuned", "deep_mlp", 0)
    row = {"run": "tuned-deep_mlp-2", "val_recon": 0, "val_kl": 7.0, "train_total": 133.0, "epochs": 50, "minutes": 5.0}
    rows = [
        {**row, "overrides": {"lr": 0.003}, "settings": {**now, "lr": 0.003}, "val_total": 136.0},
        {**row, "overrides": {}, "settings": now, "val_total": 134.3},
        # Recorded with no override under an older recipe: it must not read as today's recipe.
        {**row, "overrides": {}, "settings": {**now, "free_bits": 0.25, "device": "cuda"}, "val_total": 135.0},
        {**row, "overrides": {"seed": 1}, "settings": {**now, "seed": 1}, "val_total": 137.0},
    ]
    path = tmp_path / "pilots.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table(path, params)
    lines = capsys.readouterr().out.splitlines()
    assert "134.30" in lines[1] and lines[1].split()[1] == "-"
    assert "135.00" in lines[2] and lines[2].split()[1] == "free_bits=0.25"  # the device changes nothing
    assert "136.00" in lines[3] and lines[3].split()[1] == "lr=0.003"
    assert "137.00" in lines[4] and lines[4].split()[1] == "seed=1"


def test_committed_pilots_record_their_settings_and_were_scored_on_validation():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pilots.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if not rows:
        pytest.skip("no validation pilots committed yet")
    # Rows from before `binarize`, `objective` and `iw_train_samples` existed trained with their defaults.
    added = {"binarize", "objective", "iw_train_samples"}
    assert all(set(r["settings"]) <= set(KEYS) and set(KEYS) - set(r["settings"]) <= added for r in rows)
    assert all(r["scored_on"].startswith("validation") and "test_total" not in r for r in rows)


def test_a_pilot_scores_the_iw_bound_on_validation_images_as_evaluate_would():
    import torch

    from benchmarks.pilot import validation_bound
    from vae.evaluation import iw_estimates
    from vae.models import build_model

    torch.manual_seed(0)
    model = build_model("simple_mlp", 2, {"hidden": 8})
    x = torch.bernoulli(torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    ev = {"seed": 3, "nll_batch": 5}
    got = validation_bound(model, x, 20, ev)
    g = torch.Generator().manual_seed(3)
    bound = torch.cat([iw_estimates(model, xb, 20, g)[0] for xb in x.split(5)])
    assert got == {
        "val_iw_bound": round(bound.mean().item(), 3),
        "val_iw_bound_se": round((bound.std() / 12**0.5).item(), 3),
        "val_iw_samples": 20,
    }
