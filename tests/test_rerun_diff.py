"""tools/rerun_diff.py: a rerun against an earlier commit's study, run by run, both stage groups."""

import json
import re
import subprocess
import sys

from tests.smoke import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import rerun_diff  # noqa: E402

LOCK = """schema: '2.0'
stages:
{entries}
"""


def entry(stage: str, run: str, model: str, history: str, dep: str) -> str:
    return (
        f"  {stage}@{run}:\n    cmd: python -m stages.train\n    deps:\n    - path: vae/training.py\n      md5: {dep}\n"
        f"    outs:\n    - path: models/{run}.pt\n      md5: {model}\n"
        f"    - path: metrics/history/{run}.csv\n      md5: {history}\n"
    )


def git(*args, cwd):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True
    )


def test_every_train_stage_of_both_groups_is_compared_and_summed_up(tmp_path, monkeypatch, capsys):
    before = [
        entry("train", "study-conv-2-0", "m1", "h1", "old"),
        entry("train_subset", "iwae-deep_mlp-2-0", "m2", "h2", "old"),
        entry("train", "tuned-conv-2-0", "m3", "h3", "old"),
        entry("train", "iwae-simple_mlp-2-0", "m4", "h4", "old"),  # its recipe then in `recipes`
    ]
    after = [
        entry("train", "study-conv-2-0", "m1", "h1", "new"),  # rerun, the same bytes
        entry("train_subset", "iwae-deep_mlp-2-0", "m9", "h9", "new"),  # rerun, another model
        entry("train", "tuned-conv-2-0", "m3", "h3", "old"),  # not yet rerun
        entry("train_subset", "iwae-simple_mlp-2-0", "m4", "h4", "new"),  # moved to subset_recipes: matched by run
    ]
    git("init", "-q", cwd=tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.lock").write_text(LOCK.format(entries="".join(before)))
    # metrics/runs/ is not in git: each run's figures are its seed's in the committed comparison.json
    (tmp_path / "metrics" / "comparison.json").write_text(
        comparison({"study-conv-2-0": (140.0, 4.5), "iwae-deep_mlp-2-0": (150.0, 3.0), "tuned-conv-2-0": (139.0, 5.0)})
    )
    git("add", "-A", cwd=tmp_path)
    git("commit", "-qm", "before", cwd=tmp_path)
    (tmp_path / "dvc.lock").write_text(LOCK.format(entries="".join(after)))
    (tmp_path / "metrics" / "comparison.json").write_text(
        comparison({"study-conv-2-0": (140.0, 4.5), "iwae-deep_mlp-2-0": (151.5, 2.0), "tuned-conv-2-0": (139.0, 5.0)})
    )
    monkeypatch.setattr(rerun_diff, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["rerun_diff.py", "HEAD"])
    assert rerun_diff.main() == 0
    out = re.sub(r" +", " ", capsys.readouterr().out)
    assert "iwae-deep_mlp-2-0 DIFFERS DIFFERS 150.0000 151.5000 1.5000" in out
    assert "study-conv-2-0 same same 140.0000 140.0000 0.0000" in out
    assert "iwae-simple_mlp-2-0 same same ? ? ?" in out  # no figures on either side: none made up
    summary = "3 runs rerun (1 not yet): 2 models and 2 histories byte-identical; only before: 0, only after: 0"
    assert summary in out
    # per column: the identical models' largest difference, and every rerun run's
    assert "total 0.0000 1.5000" in out and "kl 0.0000 1.0000" in out


def comparison(runs: dict[str, tuple[float, float]]) -> str:
    """A comparison.json as compare writes it: recipe -> cell -> column -> per_seed, from {run: (total, kl)}."""
    doc: dict = {}
    for run, (total, kl) in runs.items():
        recipe, family, z, seed = run.split("-")
        c = doc.setdefault(recipe, {}).setdefault(f"{family}-{z}", {"seeds": 1})
        for col, v in (("total", total), ("kl", kl)):
            c.setdefault(col, {"mean": v, "per_seed": {}})["per_seed"][seed] = v
    return json.dumps(doc)
