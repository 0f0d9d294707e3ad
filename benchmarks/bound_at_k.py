"""A committed binarized run's NLL bound at K = eval.iw_samples and at the published K (eval.literature_iw_samples,
the first K of the same draws), with today's evaluate code, outside the pipeline: for runs committed before the
evaluate stage reported the second bound. One JSON line per run, beside the committed bound it should reproduce.

    python -m benchmarks.bound_at_k binarized-deep_mlp-2-0 binarized-deep_mlp-2-1   # after `dvc pull`
"""

import argparse
import json
import time

import torch

from stages.common import stage_main
from vae import paths
from vae.checkpoints import load_model
from vae.data import load_split, scored_test_images, to_float
from vae.evaluation import full_report
from vae.params import read_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="binarized runs, e.g. binarized-deep_mlp-2-0")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the evaluate stage
    params = read_params()
    ev, dataset = params["eval"], params["data"]["dataset"]
    for run in args.runs:
        t0 = time.perf_counter()
        _, family, z, _ = run.split("-")
        model, state = load_model(paths.model(run), family, int(z))
        x = scored_test_images(to_float(load_split(paths.data(dataset), dataset, "test")[0]), state["binarize"])
        r = full_report(
            model,
            x,
            iw_samples=ev["iw_samples"],
            iw_images=ev["nll_images"],
            iw_also=ev["literature_iw_samples"],
            iw_batch=ev["nll_batch"],
            seed=ev["seed"],
            batch_size=ev["batch_size"],
            kl_threshold=ev["collapse_kl"],
            au_threshold=ev["active_threshold"],
        )
        line = {
            "run": run,
            "k": ev["iw_samples"],
            "iw_bound": round(r["iw_bound"], 4),
            "iw_bound_se": round(r["iw_bound_se"], 4),
            "k_lit": ev["literature_iw_samples"],
            "iw_bound_lit": round(r["iw_bound_also"], 4),
            "iw_bound_lit_se": round(r["iw_bound_also_se"], 4),
            "committed_iw_bound": json.loads(paths.metrics(run).read_text())["iw_bound"],
            "seconds": round(time.perf_counter() - t0),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    stage_main("bound_at_k", main)
