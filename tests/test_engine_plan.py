"""The plan and the estimate for a family the engine has no figures for (a user's new architecture):
no KeyError anywhere, a cost from its own timed steps, and the estimate says which families had none."""

import sys
from argparse import Namespace

import pytest

from tests.smoke import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import engine_plan  # noqa: E402

from vae.config import load_params  # noqa: E402


def test_a_family_without_a_measured_cost_is_planned_calibrated_and_named(monkeypatch):
    for table in (engine_plan.COST, engine_plan.NLL_COST, engine_plan.CALIBRATION_S):
        monkeypatch.delitem(table, "deep_mlp")  # as if deep_mlp were new
    params = load_params(ROOT / "params.yaml")
    every = engine_plan.plan(params)
    assert len(every) == len(set(every_run for every_run, _ in every)) and any("-deep_mlp-" in r for r, _ in every)
    todo = engine_plan.plan(params, only=r"^tuned-(simple|deep)_mlp-2-0$")
    here = Namespace(scheduler=None, threads=1, workers=2)
    line, cost, _ = engine_plan.estimate(todo, here, params)  # a real calibration of both families, here
    assert "deep_mlp: no measured cost, estimated from its own timed steps" in line, line
    # Costed from its own steps at the measured families' rate: near what it really takes (4.5 min).
    assert 1 < cost["deep_mlp"][0] < 20, cost
    assert [run for run, _ in todo] == ["tuned-deep_mlp-2-0", "tuned-simple_mlp-2-0"], "longest first"
    line, cost, _ = engine_plan.estimate(
        todo, Namespace(scheduler="tls://elsewhere:8786", threads=1, workers=2), params
    )
    assert "(deep_mlp: no measured cost, counted as the costliest family)" in line, line
    assert cost["deep_mlp"] == (27, 19)


def test_a_subset_recipes_runs_are_planned_as_their_stage_group_at_their_objectives_cost():
    """iwae runs are train_subset@/evaluate_subset@ stages (dvc.yaml's second group), on its families alone,
    and an IWAE run costs about its measured step ratio at K = 20 more than the same run on the ELBO."""
    params = load_params(ROOT / "params.yaml")
    todo = dict(engine_plan.plan(params))
    assert todo["iwae-deep_mlp-2-0"] == ["train_subset@iwae-deep_mlp-2-0", "evaluate_subset@iwae-deep_mlp-2-0"]
    assert todo["binarized-deep_mlp-2-0"] == ["train@binarized-deep_mlp-2-0", "evaluate@binarized-deep_mlp-2-0"]
    assert not [r for r in todo if r.startswith("iwae-conv")] and len(todo) == 90 + 12
    cost = engine_plan.costs(["deep_mlp"])
    iwae, elbo = (engine_plan.minutes(f"{r}-deep_mlp-2-0", params, cost) for r in ("iwae", "binarized"))
    nll = engine_plan.NLL_COST["deep_mlp"]
    assert (iwae - nll) / (elbo - nll) == pytest.approx(engine_plan.IWAE_RATIO_K20["deep_mlp"])
