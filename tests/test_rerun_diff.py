"""tools/rerun_diff.py: a rerun against an earlier commit's study, run by run, both stage groups."""

import json
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
    (tmp_path / "metrics" / "runs").mkdir(parents=True)
    git("init", "-q", cwd=tmp_path)
    (tmp_path / "dvc.lock").write_text(LOCK.format(entries="".join(before)))
    for run, total in (("study-conv-2-0", 140.0), ("iwae-deep_mlp-2-0", 150.0)):
        (tmp_path / "metrics" / "runs" / f"{run}.json").write_text(json.dumps({"total": total}))
    git("add", "-A", cwd=tmp_path)
    git("commit", "-qm", "before", cwd=tmp_path)
    (tmp_path / "dvc.lock").write_text(LOCK.format(entries="".join(after)))
    (tmp_path / "metrics" / "runs" / "iwae-deep_mlp-2-0.json").write_text(json.dumps({"total": 151.5}))
    monkeypatch.setattr(rerun_diff, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["rerun_diff.py", "HEAD"])
    assert rerun_diff.main() == 0
    out = capsys.readouterr().out
    assert (
        "iwae-deep_mlp-2-0            DIFFERS   DIFFERS" in out and "study-conv-2-0               same      same" in out
    )
    assert "iwae-simple_mlp-2-0          same      same" in out
    summary = "3 runs rerun (1 not yet): 2 models and 2 histories byte-identical; largest |test -ELBO difference| 1.5"
    assert summary in out and "only before: 0, only after: 0" in out
