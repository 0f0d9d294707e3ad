import json

import pandas as pd
import pytest

from vae import paths, report


def test_bold_marks_the_best_of_each_column():
    df = pd.DataFrame({"total": [140.0, 139.0, 150.0], "recon": [130.0, 131.0, 150.0], "kl": [10.0, 8.0, 0.0]})
    out = report.bold_best(df, {"total": "min", "recon": "min", "kl": "max"})
    assert out["total"].tolist() == ["140.00", "**139.00**", "150.00"]
    assert out["recon"].tolist() == ["**130.00**", "131.00", "150.00"]
    assert out["kl"].tolist() == ["**10.00**", "8.00", "0.00"]


def test_ties_are_all_bold():
    out = report.bold_best(pd.DataFrame({"total": [1.0, 1.0]}), {"total": "min"})
    assert out["total"].tolist() == ["**1.00**", "**1.00**"]


def _metrics(run, total, recon, kl):
    fam, z = run.rsplit("-", 1)
    return {"total": total, "recon": recon, "kl": kl, "nll": total - 5, "elbo_gap": 5.0, "active_units": 1,
            "mutual_info": 1.5, "kl_per_dim": [kl], "collapsed": kl < 1, "collapse_reasons": ["x"] if kl < 1 else [],
            "units": "nats per image", "family": fam, "nll_samples": 1000, "nll_images": 1000,
            "z": int(z), "parameters": 10, "epochs": 1, "test_images": 10000, "z_samples": 1, "seed": 0,
            "study_last_batch": {"images": 16, "total": total * 16, "recon": recon * 16, "kl": kl * 16}}


def test_aggregation_uses_the_params_run_list_not_a_glob(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {"conv-1": (150, 140, 10), "conv-2": (139, 130, 9), "deep_mlp-1": (170, 170, 0), "stale-9": (1, 1, 0)}
    for run, v in values.items():
        for p in (paths.metrics(run), paths.history(run)):
            p.parent.mkdir(parents=True, exist_ok=True)
        paths.metrics(run).write_text(json.dumps(_metrics(run, *v)))
        pd.DataFrame({"epoch": [1], "test_total": [v[0]]}).to_csv(paths.history(run), index=False)
    runs = [("conv", 1), ("conv", 2), ("deep_mlp", 1)]
    df = report.load_metrics(runs)
    assert df["run"].tolist() == ["conv-1", "conv-2", "deep_mlp-1"]
    report.write_comparison(df, report.load_curves(runs), {"total": "min", "recon": "min", "kl": "max"},
                            tmp_path / "c.json", tmp_path / "c.csv", tmp_path / "curves.csv", tmp_path / "c.md",
                            tmp_path / "c.png")
    comparison = json.loads((tmp_path / "c.json").read_text())
    assert list(comparison) == ["conv-1", "conv-2", "deep_mlp-1"]
    assert comparison["conv-2"] == {"total": 139, "recon": 130, "kl": 9, "nll": 134, "elbo_gap": 5,
                                    "mutual_info": 1.5, "active_units": 1, "collapsed": False}
    md = (tmp_path / "c.md").read_text()
    assert "nats per image" in md and "**139.00**" in md and "**10.00**" in md and "stale" not in md
    assert "| conv | 2 | 2252.0 | 2136.1 | 115.9 | 2224.0 |" in md  # next to the study's row
    collapsed_row = next(line for line in md.splitlines() if line.startswith("| deep_mlp"))
    assert "⚠ x" in collapsed_row and "⚠ marks posterior collapse" in md
    assert pd.read_csv(tmp_path / "c.csv").shape == (3, 10)
    assert pd.read_csv(tmp_path / "curves.csv")["run"].tolist() == ["conv-1", "conv-2", "deep_mlp-1"]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_run_metrics_names_the_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"dvc repro evaluate@conv-2"):
        report.load_metrics([("conv", 2)])
