import json

import pytest

from benchmarks.pilot import parse_overrides, table


def test_overrides_are_read_as_params_yaml_reads_them():
    # YAML 1.2: PyYAML would read 5e-4 as a string and the run would fail an hour later.
    assert parse_overrides(["lr=5e-4", "batch_size=64", "grad_clip=null", "lr_schedule=cosine"]) == {
        "lr": 0.0005, "batch_size": 64, "grad_clip": None, "lr_schedule": "cosine"}


@pytest.mark.parametrize("item", ["batchsize=64", "lr", "=1"])
def test_an_unknown_or_malformed_override_names_the_allowed_keys(item):
    with pytest.raises(SystemExit, match="KEY among: optimizer, lr, "):
        parse_overrides([item])


def test_table_lists_each_run_best_first(tmp_path, capsys):
    rows = [{"run": "tuned-deep_mlp-2", "overrides": {"lr": 0.003}, "test_total": 136.0, "test_recon": 129.0,
             "test_kl": 7.0, "train_total": 133.7, "epochs": 50, "minutes": 5.1},
            {"run": "tuned-deep_mlp-2", "overrides": {}, "test_total": 134.3, "test_recon": 127.1,
             "test_kl": 7.2, "train_total": 131.2, "epochs": 50, "minutes": 5.1}]
    path = tmp_path / "pilots.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table(path)
    lines = capsys.readouterr().out.splitlines()
    assert "134.30" in lines[1] and lines[1].split()[1] == "-"
    assert "136.00" in lines[2] and "lr=0.003" in lines[2]
