"""Stage train@RECIPE-FAMILY-Z-SEED: fit one VAE; write the model and its per-epoch history.

An interrupted run resumes from its epoch checkpoint (checkpoints/RUN.pt), but
only when everything the stage depends on is unchanged: its params, the data,
the code it imports and the torch version. The checkpoint is removed once the
model is written. TensorBoard logs go to logs/RUN.
"""
import json

import torch

from vae import paths
from vae.checkpoints import save_model
from vae.config import train_config
from vae.data import MANIFEST, load_split, to_float
from vae.models import count_parameters
from vae.training import train, write_history
from stages.common import code_fingerprint, fingerprint, parse_args, run_params, stage_main


def main() -> None:
    args = parse_args(__doc__, per="run")
    params, run = run_params(args)
    settings = train_config(params, args.recipe, args.family, args.seed)
    model_cfg = params["models"][args.family]
    dataset, subset = params["data"]["dataset"], params["data"]["train_subset"]
    data_dir = paths.data(dataset)
    train_images = load_split(data_dir, dataset, "train")[0][:subset]
    test_images = load_split(data_dir, dataset, "test")[0]

    # The params this stage declares in dvc.yaml, as written, plus what they cannot name.
    declared = {"data": {"dataset": dataset, "train_subset": subset}, "model": model_cfg, "train": params["train"],
                "recipe": params["recipe"][args.recipe], "eval": {k: params["eval"][k] for k in ("seed", "batch_size")}}
    data_id = {k: r["sha256"] for k, r in json.loads((data_dir / MANIFEST).read_text())["files"].items()}
    resume_key = fingerprint(run, declared, data_id, code_fingerprint(), torch.__version__)

    model, history = train(run, args.family, args.z, model_cfg, settings, to_float(train_images),
                           to_float(test_images), checkpoint=paths.checkpoint(run), log_dir=paths.logs(run),
                           eval_seed=params["eval"]["seed"], eval_batch_size=params["eval"]["batch_size"],
                           fingerprint=resume_key)
    write_history(paths.history(run), history)
    save_model(paths.model(run), model.cpu(), args.family, args.z, model_cfg,
               {"epochs": len(history), "parameters": count_parameters(model)})
    paths.checkpoint(run).unlink(missing_ok=True)  # the run is complete: nothing left to resume


if __name__ == "__main__":
    stage_main("train", main)
