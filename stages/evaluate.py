"""Stage evaluate@RECIPE-FAMILY-Z-SEED: test-set loss, importance-weighted bound and collapse diagnostics.

Writes metrics/runs/RUN.json (the DVC metric: one row of `dvc metrics show` per
run, the keys of vae/metrics.py) and metrics/details/RUN.json (what the row cannot
hold). A run that diverged (vae/metrics.py's definition, on its history: the loss became NaN or
infinite, or its last training -ELBO is absurd) is evaluated too, on the model it kept, and marked
`diverged`, as the comparison counts it. A binarized run (its model file records `binarize: dynamic`,
written by the train stage) is scored on the fixed binarization of the test set, its IW bound on
eval.nll_images (all by default) in batches of eval.nll_batch: an upper bound on the NLL of binarized
MNIST, with its standard error over the images, at K = eval.iw_samples and at the published figures'
K = eval.literature_iw_samples (the first K of the same samples). With VAE_RESTORE_ONLY set (the
study's assembly step) it refuses to compute: runs come from DVC's run-cache there.
"""

import csv
import math

import torch

from stages.common import parse_args, refuse_if_restore_only, run_params, stage_main
from vae import paths
from vae.atomic import write_json
from vae.checkpoints import load_model
from vae.data import load_split, scored_test_images, to_float
from vae.evaluation import full_report
from vae.losses import evaluate
from vae.metrics import BINARIZED_METRICS, METRICS, divergence
from vae.params import stage


def main() -> None:
    args = parse_args(__doc__, per="run")
    params, run = run_params(args)
    refuse_if_restore_only(stage(params, "evaluate", args.recipe, run))
    ev, dataset = params["eval"], params["data"]["dataset"]
    model, state = load_model(paths.model(run), args.family, args.z, stage(params, "train", args.recipe, run))
    if params["train"]["channels_last"]:  # the IW bound decodes K samples per image: use the fast layout
        model = model.to(memory_format=torch.channels_last)
    # How the model was trained says what it is scored on; the model file (a dep) records it, so no param is read.
    binarize = state.get("binarize", "none")
    binarized = binarize != "none"
    test_x = scored_test_images(to_float(load_split(paths.data(dataset), dataset, "test")[0]), binarize)
    elbo = evaluate(model, test_x, ev["batch_size"], ev["seed"], ev["z_samples"])
    report = full_report(
        model,
        test_x,
        iw_samples=ev["iw_samples"],
        iw_images=ev["nll_images"] if binarized else ev["iw_images"],
        iw_also=ev["literature_iw_samples"] if binarized else None,
        iw_batch=ev["nll_batch"] if binarized else ev["iw_batch"],
        seed=ev["seed"],
        batch_size=ev["batch_size"],
        kl_threshold=ev["collapse_kl"],
        au_threshold=ev["active_threshold"],
    )
    with paths.history(run).open() as f:
        diverged = divergence(list(csv.DictReader(f)))
    values = {**elbo, **report}
    if binarized:
        values.update(iw_bound_lit=report["iw_bound_also"], iw_bound_lit_se=report["iw_bound_also_se"])
    reported = {**METRICS, **(BINARIZED_METRICS if binarized else {})}
    metrics = {
        **{k: round(values[k], 4) for k in reported},
        "collapsed": report["collapsed"],
        "diverged": bool(diverged),
    }
    details = {
        "units": "nats per image",
        "dataset": dataset,
        "recipe": args.recipe,
        "family": args.family,
        "z": args.z,
        "seed": args.seed,
        "kl_per_dim": report["kl_per_dim"],
        # MI's Monte Carlo noise (one z per image): a collapsed run's estimate scatters around 0 by about this.
        "mutual_info_se": round(report["mutual_info_se"], 4),
        "collapse_reasons": report["collapse_reasons"],
        "parameters": state["parameters"],
        "epochs": state["epochs"],
        "test_images": len(test_x),
        "z_samples": ev["z_samples"],
        "iw_samples": ev["iw_samples"],
        "iw_images": report["iw_images"],
        **({"iw_samples_lit": ev["literature_iw_samples"]} if binarized else {}),
        "eval_seed": ev["seed"],
        "diverged": diverged,
    }
    if "objective" in state:  # an IWAE run (an ELBO run's model file says nothing, as it always did)
        details.update(objective=state["objective"], iw_train_samples=state["iw_train_samples"])
    if binarized:
        details["binarize"] = binarize
        details["targets"] = (
            "the fixed binarization of the test set (vae/data.py); iw_bound is an upper bound on the NLL "
            "of binarized images, iw_bound_se its standard error over the iw_images images"
        )
    elif dataset == "mnist":  # the study's units, for the grey-level runs set beside the study's table
        # The study's table looks like the summed loss of the last, partial test batch
        # (10000 = 78 * 128 + 16 images at batch size 128); give that figure too.
        tail = len(test_x) % ev["study_batch_size"] or ev["study_batch_size"]
        last = evaluate(model, test_x[-tail:], ev["batch_size"], ev["seed"], ev["z_samples"])
        details["study_last_batch"] = {
            "images": tail,
            **{t: round(v * tail, 2) for t, v in last.items()},
            "units": f"nats summed over the last {tail} test images",
        }
    if diverged:  # its model may give NaN or infinite figures: null, as JSON has no NaN
        metrics, details = nulls(metrics), nulls(details)
    # Any other run's NaN is a bug, not a result: write_json refuses it.
    write_json(paths.metrics(run), metrics)
    write_json(paths.details(run), details)
    collapsed = f"  COLLAPSED: {'; '.join(report['collapse_reasons'])}" if report["collapsed"] else ""
    bound = (
        f"NLL upper bound {report['iw_bound']:.3f} ± {report['iw_bound_se']:.3f} (SE over "
        f"{report['iw_images']} images) nats/image on binarized {dataset}; at K={ev['literature_iw_samples']} "
        f"{report['iw_bound_also']:.3f} ± {report['iw_bound_also_se']:.3f}"
        if binarized
        else f"IW bound {report['iw_bound']:.3f} nats/image"
    )
    print(
        f"{run}: -ELBO {elbo['total']:.3f} (recon {elbo['recon']:.3f}, KL {elbo['kl']:.3f}), "
        f"{bound} (K={ev['iw_samples']}), "
        f"AU {report['active_units']}/{args.z}, MI {report['mutual_info']:.3f}{collapsed}"
        + (f"  DIVERGED: {diverged}" if diverged else "")
    )


def nulls(obj):
    """obj with every NaN or infinite float replaced by None (JSON null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: nulls(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nulls(v) for v in obj]
    return obj


if __name__ == "__main__":
    stage_main("evaluate", main)
