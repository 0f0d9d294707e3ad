"""Stage evaluate@RECIPE-FAMILY-Z: test-set loss, likelihood and collapse diagnostics -> metrics/runs/RUN.json."""
import torch

from vae import io, paths
from vae.data import load_split, to_float
from vae.metrics import full_report
from vae.training import evaluate, load_model
from stages.common import run_args


def main() -> None:
    params, recipe, family, z, run = run_args(__doc__)
    ev = params["eval"]
    model, state = load_model(paths.model(run), family, z)
    if params["train"]["channels_last"]:  # IS-NLL decodes K samples per image: use the fast layout
        model = model.to(memory_format=torch.channels_last)
    test_x = to_float(load_split(paths.DATA, "test")[0])
    elbo = evaluate(model, test_x, ev["batch_size"], ev["seed"], ev["z_samples"])
    deep = full_report(model, test_x, nll_samples=ev["nll_samples"], nll_images=ev["nll_images"],
                       nll_batch=ev["nll_batch"],
                       seed=ev["seed"], batch_size=ev["batch_size"], kl_threshold=ev["collapse_kl"],
                       au_threshold=ev["active_threshold"])

    # The study's table looks like the summed loss of the last, partial test batch
    # (10000 = 78 * 128 + 16 images at batch size 128); give that figure too.
    tail = len(test_x) % ev["study_batch_size"] or ev["study_batch_size"]
    last = evaluate(model, test_x[-tail:], ev["batch_size"], ev["seed"], ev["z_samples"])

    io.write_json(paths.metrics(run), {
        **{t: round(v, 4) for t, v in elbo.items()},
        "nll": round(deep["nll"], 4),
        "elbo_gap": round(elbo["total"] - deep["nll"], 4),
        "active_units": deep["active_units"],
        "mutual_info": round(deep["mutual_info"], 4),
        "kl_per_dim": deep["kl_per_dim"],
        "collapsed": deep["collapsed"],
        "collapse_reasons": deep["collapse_reasons"],
        "units": "nats per image",
        "recipe": recipe, "family": family, "z": z, "parameters": state["parameters"], "epochs": state["epochs"],
        "test_images": len(test_x), "z_samples": ev["z_samples"], "nll_samples": ev["nll_samples"],
        "nll_images": deep["nll_images"], "seed": ev["seed"],
        "study_last_batch": {"images": tail, **{t: round(v * tail, 2) for t, v in last.items()},
                             "units": f"nats summed over the last {tail} test images"},
    })
    print(f"{run}: -ELBO {elbo['total']:.3f} (recon {elbo['recon']:.3f}, KL {elbo['kl']:.3f}), "
          f"IS-NLL {deep['nll']:.3f} nats/image (K={ev['nll_samples']}), AU {deep['active_units']}/{z}, "
          f"MI {deep['mutual_info']:.3f}{'  COLLAPSED: ' + '; '.join(deep['collapse_reasons']) if deep['collapsed'] else ''}")


if __name__ == "__main__":
    main()
