"""Stage evaluate@RECIPE-FAMILY-Z-SEED: test-set loss, importance-weighted bound and collapse diagnostics.

Writes metrics/runs/RUN.json (the DVC metric: one row of `dvc metrics show` per
run) and metrics/details/RUN.json (what the row cannot hold).
"""
import torch

from vae import paths
from vae.atomic import write_json
from vae.checkpoints import load_model
from vae.data import load_split, to_float
from vae.evaluation import evaluate, full_report
from stages.common import parse_args, run_params, stage_main


def main() -> None:
    args = parse_args(__doc__, per="run")
    params, run = run_params(args)
    ev, dataset = params["eval"], params["data"]["dataset"]
    model, state = load_model(paths.model(run), args.family, args.z)
    if params["train"]["channels_last"]:  # the IW bound decodes K samples per image: use the fast layout
        model = model.to(memory_format=torch.channels_last)
    test_x = to_float(load_split(paths.data(dataset), dataset, "test")[0])
    elbo = evaluate(model, test_x, ev["batch_size"], ev["seed"], ev["z_samples"])
    report = full_report(model, test_x, iw_samples=ev["iw_samples"], iw_images=ev["iw_images"],
                         iw_batch=ev["iw_batch"], seed=ev["seed"], batch_size=ev["batch_size"],
                         kl_threshold=ev["collapse_kl"], au_threshold=ev["active_threshold"])
    write_json(paths.metrics(run), {
        **{t: round(v, 4) for t, v in elbo.items()},
        **{k: round(report[k], 4) for k in ("iw_bound", "elbo_gap", "mutual_info")},
        "active_units": report["active_units"], "collapsed": report["collapsed"],
    })
    details = {
        "units": "nats per image", "dataset": dataset, "recipe": args.recipe, "family": args.family, "z": args.z,
        "seed": args.seed, "kl_per_dim": report["kl_per_dim"], "collapse_reasons": report["collapse_reasons"],
        "parameters": state["parameters"], "epochs": state["epochs"], "test_images": len(test_x),
        "z_samples": ev["z_samples"], "iw_samples": ev["iw_samples"], "iw_images": report["iw_images"],
        "eval_seed": ev["seed"],
    }
    if dataset == "mnist":
        # The study's table looks like the summed loss of the last, partial test batch
        # (10000 = 78 * 128 + 16 images at batch size 128); give that figure too.
        tail = len(test_x) % ev["study_batch_size"] or ev["study_batch_size"]
        last = evaluate(model, test_x[-tail:], ev["batch_size"], ev["seed"], ev["z_samples"])
        details["study_last_batch"] = {"images": tail, **{t: round(v * tail, 2) for t, v in last.items()},
                                       "units": f"nats summed over the last {tail} test images"}
    write_json(paths.details(run), details)
    collapsed = f"  COLLAPSED: {'; '.join(report['collapse_reasons'])}" if report["collapsed"] else ""
    print(f"{run}: -ELBO {elbo['total']:.3f} (recon {elbo['recon']:.3f}, KL {elbo['kl']:.3f}), "
          f"IW bound {report['iw_bound']:.3f} nats/image (K={ev['iw_samples']}), "
          f"AU {report['active_units']}/{args.z}, MI {report['mutual_info']:.3f}{collapsed}")


if __name__ == "__main__":
    stage_main("evaluate", main)
