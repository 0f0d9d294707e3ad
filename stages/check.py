"""Stage check: validate params.yaml before any other stage runs.

DVC deletes a stage's outputs before running its command, so a stage that
validated its own params would lose its outputs to a typo. Every stage depends
on this stage's output, whose bytes never change: a bad param stops `dvc repro`
here, before anything is deleted, and a good change reruns nothing by itself.
The same goes for a device this machine does not have (`cuda` without CUDA).

It also writes, for every (recipe, family), all that its runs' train stage reads of params.yaml to
checks/settings/RECIPE-FAMILY.json: the training settings as they resolve (`train`, then
`recipe.RECIPE`, then `recipe.RECIPE.families.FAMILY`), `models.FAMILY`, the data and the eval seed
and batch size of its per-epoch test loss. train@ reads that file and depends on it instead of the
params, so a change to one family's override of one recipe reruns that family's runs of that recipe
(and of a recipe merging it), and no others; and train imports no validation code.
"""

import json
import os

from stages.common import parse_args, stage_main
from vae import paths
from vae.atomic import write_text
from vae.config import load_params, setting_key, train_config, unread_settings
from vae.params import pairs
from vae.training import DeviceError, resolve_device


def main() -> None:
    parse_args(__doc__)
    params = load_params()
    # The distributed study runs check on its coordinator, which need not have the workers'
    # GPUs; a worker without the device fails its run in its own scratch workspace.
    if not os.environ.get("VAE_STUDY_COORDINATOR"):
        check_devices(params)
    for recipe, family in pairs(params):
        write_text(paths.settings(recipe, family), json.dumps(settings(params, recipe, family), indent=2) + "\n")
    write_text(paths.CHECKED, "params.yaml is valid\n")


def settings(params: dict, recipe: str, family: str) -> dict:
    """What train@RECIPE-FAMILY-Z-SEED reads, for every Z and SEED (the seed is in the run's name)."""
    train = train_config(params, recipe, family, seed=0)
    for key in {"seed"} | unread_settings(train):
        del train[key]
    return {
        "data": {k: params["data"][k] for k in ("dataset", "train_subset")},
        "eval": {k: params["eval"][k] for k in ("seed", "batch_size")},
        "model": params["models"][family],
        "train": dict(sorted(train.items())),
    }


def check_devices(params: dict) -> None:
    """Every run's device is available here; the error names the key that set it."""
    for recipe, family in pairs(params):
        try:
            resolve_device(train_config(params, recipe, family, seed=0)["device"])
        except DeviceError as e:
            raise DeviceError(str(e).replace("train.device", setting_key(params, recipe, family, "device"))) from None


if __name__ == "__main__":
    stage_main("check", main)
