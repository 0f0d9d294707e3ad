"""The plan and the estimate for a family the engine has no figures for (a user's new architecture):
no KeyError anywhere, a cost from its own timed steps, and the estimate says which families had none."""

import sys
from argparse import Namespace

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
    line, cost = engine_plan.estimate(todo, here, params)  # a real calibration of both families, here
    assert "deep_mlp: no measured cost, estimated from its own timed steps" in line, line
    # Costed from its own steps at the measured families' rate: near what it really takes (4.5 min).
    assert 1 < cost["deep_mlp"][0] < 20, cost
    assert [run for run, _ in todo] == ["tuned-deep_mlp-2-0", "tuned-simple_mlp-2-0"], "longest first"
    line, cost = engine_plan.estimate(todo, Namespace(scheduler="tls://elsewhere:8786", threads=1, workers=2), params)
    assert "(deep_mlp: no measured cost, counted as the costliest family)" in line, line
    assert cost["deep_mlp"] == (27, 19)
