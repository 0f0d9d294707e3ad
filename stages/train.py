"""Stage train@RECIPE-FAMILY-Z-SEED: fit one VAE; write the model and its per-epoch history.

An interrupted run resumes from its epoch checkpoint (checkpoints/RUN.pt), but
only when everything the stage depends on is unchanged: its params, the data,
the code it imports and the torch version. The checkpoint is removed once the
model is written. TensorBoard logs go to logs/RUN. A run whose loss becomes NaN or
infinite stops there and still succeeds: it writes the model of the last finite epoch,
marked `diverged`, and the history up to the epoch that blew up, so the comparison counts
it. A binarized run (train.binarize: dynamic) reports its per-epoch test loss on the fixed
binarization of the test set, and its model file records `binarize`, so the stages that
load it (evaluate, plot) score it on the same bits. With VAE_RESTORE_ONLY set (the study's
assembly step) it refuses to train: runs come from DVC's run-cache there.
"""

import json
import traceback

import torch

from stages.common import (
    code_fingerprint,
    fingerprint,
    parse_args,
    read_settings,
    refuse_if_restore_only,
    run_params,
    stage_main,
)
from vae import paths
from vae.checkpoints import save_model
from vae.data import MANIFEST, load_split, scored_test_images, to_float
from vae.models import count_parameters
from vae.params import stage
from vae.training import blew_up, train, write_history


def main() -> None:
    args = parse_args(__doc__, per="run")
    params, run = run_params(args)
    refuse_if_restore_only(stage(params, "train", args.recipe, run))
    # Everything this run reads of params.yaml, as `check` validated and resolved it: its one dependency on
    # params, so a change to another family's or recipe's settings leaves it up to date.
    declared = read_settings(args.recipe, args.family)
    settings, model_cfg, ev = {**declared["train"], "seed": args.seed}, declared["model"], declared["eval"]
    dataset, subset = declared["data"]["dataset"], declared["data"]["train_subset"]
    data_dir = paths.data(dataset)
    train_images = load_split(data_dir, dataset, "train")[0][:subset]
    test_images = load_split(data_dir, dataset, "test")[0]

    data_id = {k: r["content_md5"] for k, r in json.loads((data_dir / MANIFEST).read_text())["files"].items()}
    resume_key = fingerprint(run, declared, data_id, code_fingerprint(), torch.__version__)

    try:
        model, history = train(
            run,
            args.family,
            args.z,
            model_cfg,
            settings,
            to_float(train_images),
            scored_test_images(to_float(test_images), settings["binarize"]),
            checkpoint=paths.checkpoint(run),
            log_dir=paths.logs(run),
            eval_seed=ev["seed"],
            eval_batch_size=ev["batch_size"],
            fingerprint=resume_key,
        )
    except OSError as e:
        # Checkpoints are written through vae.atomic, which names the file; TensorBoard's failed
        # writes name none: name its log directory, so a full disk there is one line too.
        if e.filename is None and any("tensorboard" in f.filename for f in traceback.extract_tb(e.__traceback__)):
            e.filename = str(paths.logs(run))
        raise
    write_history(paths.history(run), history)
    extra: dict[str, int | str] = {"epochs": len(history), "parameters": count_parameters(model)}
    if settings["binarize"] != "none":  # only then: a grey-level run writes the same bytes as ever
        extra["binarize"] = settings["binarize"]
    if settings["objective"] != "elbo":  # only then, as binarize: what the evaluation's table ranks it by
        extra.update(objective=settings["objective"], iw_train_samples=settings["iw_train_samples"])
    if blew_up(history):  # only then: a run that did not diverge writes the same bytes as ever
        epoch = history[-1]["epoch"]
        kept = f"the model of epoch {epoch - 1}" if epoch > 1 else "the initial weights"
        extra.update(epochs=epoch - 1, diverged=f"loss not finite in epoch {epoch}: training stopped; kept {kept}")
    save_model(paths.model(run), model.cpu(), args.family, args.z, model_cfg, extra)
    paths.checkpoint(run).unlink(missing_ok=True)  # the run is complete: nothing left to resume


if __name__ == "__main__":
    stage_main("train", main)
