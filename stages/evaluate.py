"""Stage evaluate@FAMILY-Z: test-set loss in nats per image -> metrics/FAMILY-Z.json."""
import torch

from vae import io, paths
from vae.data import load_split, to_float
from vae.training import evaluate, load_model
from stages.common import run_args


def main() -> None:
    params, family, z, run = run_args(__doc__)
    ev = params["eval"]
    model, state = load_model(paths.model(run), family, z)
    test_x = to_float(load_split(paths.DATA, "test")[0])
    result = evaluate(model, test_x, ev["batch_size"], ev["seed"], ev["z_samples"])

    # The study's table looks like the summed loss of the last, partial test batch
    # (10000 = 78 * 128 + 16 images at batch size 128); give that figure too.
    tail = len(test_x) % ev["study_batch_size"] or ev["study_batch_size"]
    last = evaluate(model, test_x[-tail:], ev["batch_size"], ev["seed"], ev["z_samples"])

    io.write_json(paths.metrics(run), {
        **{t: round(v, 4) for t, v in result.items()},
        "units": "nats per image",
        "family": family, "z": z, "parameters": state["parameters"], "epochs": state["epochs"],
        "test_images": len(test_x), "z_samples": ev["z_samples"], "seed": ev["seed"],
        "study_last_batch": {"images": tail, **{t: round(v * tail, 2) for t, v in last.items()},
                             "units": f"nats summed over the last {tail} test images"},
    })
    print(f"{run}: total {result['total']:.3f}  recon {result['recon']:.3f}  KL {result['kl']:.3f} "
          f"nats/image (torch {torch.__version__})")


if __name__ == "__main__":
    main()
