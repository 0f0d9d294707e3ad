"""Stage train@RECIPE-FAMILY-Z: fit one VAE; write the model, TensorBoard logs and per-epoch history."""
import json
import sys

from vae import paths
from vae.config import train_config
from vae.data import MANIFEST, load_split, to_float
from vae.models import count_parameters
from vae.training import TrainingDiverged, fingerprint, save_model, train, write_history
from stages.common import run_args


def main() -> None:
    params, recipe, family, z, run = run_args(__doc__)
    tcfg, model_cfg = train_config(params, recipe, family), params["models"][family]
    train_images, _ = load_split(paths.DATA, "train")
    subset = params["data"]["train_subset"]
    if subset:
        train_images = train_images[:subset]
    test_images, _ = load_split(paths.DATA, "test")

    # The device changes speed, not the run, so it does not invalidate a checkpoint.
    data_id = json.loads((paths.DATA / MANIFEST).read_text())
    fp = fingerprint(family, z, model_cfg, {k: v for k, v in tcfg.items() if k != "device"},
                     subset, {k: r["sha256"] for k, r in data_id["files"].items()})
    try:
        model, history = train(run, family, z, model_cfg, tcfg, to_float(train_images), to_float(test_images),
                               checkpoint=paths.checkpoint(run), log_dir=paths.logs(run),
                               eval_seed=params["eval"]["seed"], eval_batch_size=params["eval"]["batch_size"],
                               fp=fp)
    except TrainingDiverged as e:
        sys.exit(f"train: {e}")
    write_history(paths.history(run), history)
    save_model(paths.model(run), model.cpu(), family, z, model_cfg,
               {"epochs": len(history), "parameters": count_parameters(model)})


if __name__ == "__main__":
    main()
