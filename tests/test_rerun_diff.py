"""tools/rerun_diff.py: a rerun against an earlier commit's study, run by run, both stage groups."""

import hashlib
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


def evaluate(stage: str, run: str, text: str) -> str:
    md5 = hashlib.md5(text.encode()).hexdigest()
    return f"  {stage}@{run}:\n    cmd: python -m stages.evaluate\n    outs:\n    - path: metrics/runs/{run}.json\n      md5: {md5}\n"


def run_json(total: float, kl: float, diverged: bool = False) -> str:
    """A metrics/runs/RUN.json as evaluate writes it (flags included, which are not figures)."""
    return json.dumps({"total": total, "kl": kl, "collapsed": False, "diverged": diverged})


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
        entry("train", "study-residual-1-2", "m5", "h5", "old"),
    ]
    after = [
        entry("train", "study-conv-2-0", "m1", "h1", "new"),  # rerun, the same bytes
        entry("train_subset", "iwae-deep_mlp-2-0", "m9", "h9", "new"),  # rerun, another model
        entry("train", "tuned-conv-2-0", "m3", "h3", "old"),  # not yet rerun
        entry("train_subset", "iwae-simple_mlp-2-0", "m4", "h4", "new"),  # moved to subset_recipes: matched by run
        entry("train", "study-residual-1-2", "m6", "h6", "new"),  # blew up on both sides, to other figures
    ]
    git("init", "-q", cwd=tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.lock").write_text(LOCK.format(entries="".join(before)))
    # metrics/runs/ is not in git: the earlier commit's figures are each run's seed's in its comparison.json
    stale = comparison(
        {
            "study-conv-2-0": (140.0, 4.5),
            "iwae-deep_mlp-2-0": (150.0, 3.0),
            "tuned-conv-2-0": (139.0, 5.0),
            "study-residual-1-2": (3.2e29, 3.2e29),
        }
    )
    (tmp_path / "metrics" / "comparison.json").write_text(stale)
    git("add", "-A", cwd=tmp_path)
    git("commit", "-qm", "before", cwd=tmp_path)
    # In the middle of a rerun compare has not run: the workspace's comparison.json is still the earlier one,
    # and the rerun runs' own figures are in metrics/runs/, as dvc.lock records them.
    runs = tmp_path / "metrics" / "runs"
    runs.mkdir()
    new = {
        "study-conv-2-0": run_json(140.0, 4.5),
        "iwae-deep_mlp-2-0": run_json(151.5, 2.0),
        "study-residual-1-2": run_json(3.1e29, 3.1e29, diverged=True),
    }
    for run, text in new.items():
        (runs / f"{run}.json").write_text(text)
    # a file not the one dvc.lock records (left by another checkout of the workspace) is no figure
    (runs / "iwae-simple_mlp-2-0.json").write_text(run_json(1.0, 1.0))
    after += [
        evaluate("evaluate", "study-conv-2-0", new["study-conv-2-0"]),
        evaluate("evaluate_subset", "iwae-deep_mlp-2-0", new["iwae-deep_mlp-2-0"]),
        evaluate("evaluate_subset", "iwae-simple_mlp-2-0", run_json(2.0, 2.0)),
        evaluate("evaluate", "study-residual-1-2", new["study-residual-1-2"]),
    ]
    (tmp_path / "dvc.lock").write_text(LOCK.format(entries="".join(after)))
    monkeypatch.setattr(rerun_diff, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["rerun_diff.py", "HEAD"])
    assert rerun_diff.main() == 0
    out = re.sub(r" +", " ", capsys.readouterr().out)
    assert "iwae-deep_mlp-2-0 DIFFERS DIFFERS 150.0000 151.5000 1.5000" in out
    assert "study-conv-2-0 same same 140.0000 140.0000 0.0000" in out
    assert "iwae-simple_mlp-2-0 same same ? ? ?" in out  # no figures on either side: none made up
    assert re.search(r"^study-residual-1-2 DIFFERS DIFFERS \S+ \S+ \S+ diverged$", out, re.M)
    assert not re.search(r"^study-conv-2-0 .* diverged$", out, re.M)
    assert "1 runs diverged in the rerun: left out of the largest differences" in out
    summary = "4 runs rerun (1 not yet): 2 models and 2 histories byte-identical; only before: 0, only after: 0"
    assert summary in out
    # per column: the identical models' largest difference, and every rerun run's but the diverged one
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
