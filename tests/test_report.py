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
    _, fam, z = run.split("-")
    return {"total": total, "recon": recon, "kl": kl, "nll": total - 5, "elbo_gap": 5.0, "active_units": 1,
            "mutual_info": 1.5, "kl_per_dim": [kl], "collapsed": kl < 1, "collapse_reasons": ["x"] if kl < 1 else [],
            "units": "nats per image", "family": fam, "nll_samples": 1000, "nll_images": 1000,
            "z": int(z), "parameters": 10, "epochs": 1, "test_images": 10000, "z_samples": 1, "seed": 0,
            "study_last_batch": {"images": 16, "total": total * 16, "recon": recon * 16, "kl": kl * 16}}


def _write_runs(values: dict) -> None:
    for run, v in values.items():
        for p in (paths.metrics(run), paths.history(run)):
            p.parent.mkdir(parents=True, exist_ok=True)
        paths.metrics(run).write_text(json.dumps(_metrics(run, *v)))
        pd.DataFrame({"epoch": [1], "test_total": [v[0]]}).to_csv(paths.history(run), index=False)


def test_aggregation_uses_the_params_run_list_not_a_glob(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_runs({"study-conv-1": (150, 140, 10), "study-conv-2": (139, 130, 9), "study-deep_mlp-1": (170, 170, 0),
                 "study-stale-9": (1, 1, 0)})
    runs = [("study", "conv", 1), ("study", "conv", 2), ("study", "deep_mlp", 1)]
    df = report.load_metrics(runs)
    assert df["run"].tolist() == ["study-conv-1", "study-conv-2", "study-deep_mlp-1"]
    report.write_comparison(df, report.load_curves(runs), {"total": "min", "recon": "min", "kl": "max"},
                            tmp_path / "c.json", tmp_path / "c.csv", tmp_path / "curves.csv", tmp_path / "c.md",
                            tmp_path / "c.png")
    comparison = json.loads((tmp_path / "c.json").read_text())
    assert list(comparison["study"]) == ["conv-1", "conv-2", "deep_mlp-1"]
    assert comparison["study"]["conv-2"] == {"total": 139, "recon": 130, "kl": 9, "nll": 134, "elbo_gap": 5,
                                             "mutual_info": 1.5, "active_units": 1, "collapsed": False}
    md = (tmp_path / "c.md").read_text()
    assert "nats per image" in md and "**139.00**" in md and "**10.00**" in md and "stale" not in md
    assert "| conv | 2 | 2252.0 | 2136.1 | 115.9 | 2224.0 |" in md  # next to the study's row
    assert "side by side" not in md  # one recipe: nothing to set side by side
    collapsed_row = next(line for line in md.splitlines() if line.startswith("| deep_mlp"))
    assert "⚠ x" in collapsed_row and "⚠ marks posterior collapse" in md
    assert pd.read_csv(tmp_path / "c.csv").shape == (3, 11)
    assert pd.read_csv(tmp_path / "curves.csv")["run"].tolist() == ["study-conv-1", "study-conv-2", "study-deep_mlp-1"]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_two_recipes_get_a_table_each_bold_within_and_their_difference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_runs({"study-conv-2": (150, 140, 10), "study-residual-2": (160, 150, 10),
                 "tuned-conv-2": (140, 131, 9), "tuned-residual-2": (135, 127, 8)})
    runs = [(r, f, 2) for r in ("study", "tuned") for f in ("conv", "residual")]
    md = report.markdown(report.load_metrics(runs), {"total": "min"})
    study, tuned = md.split("## Recipe `study`")[1].split("## Recipe `tuned`")
    assert "**150.00**" in study and "160.00" in study and "135.00" not in study
    assert "**135.00**" in tuned and "140.00" in tuned and "**140.00**" not in tuned
    assert "| conv | 2 | 150.00 | 140.00 | -10.00 |" in md
    assert "| residual | 2 | 160.00 | 135.00 | -25.00 |" in md
    # The study's table sits next to the first recipe's runs, in its apparent units.
    assert "| conv | 2 | 2252.0 | 2136.1 | 115.9 | 2400.0 |" in md


def test_missing_run_metrics_names_the_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"dvc repro evaluate@study-conv-2"):
        report.load_metrics([("study", "conv", 2)])
