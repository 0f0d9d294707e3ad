"""Recipe pilot: train one run with a recipe's settings plus overrides and print its validation losses.

How the tuned recipe is chosen: each pilot is the pipeline's own training loop
at the full epoch count, trained on the training images minus the last
`data.validation` and scored on those held-out images, never on the test set.
It writes nothing under the project (no model, no DVC state), so pilots can
run beside `dvc repro`. Results are appended to a JSON-lines file, so a sweep
reads as one table:

    OMP_NUM_THREADS=1 python -m benchmarks.pilot tuned deep_mlp 2 lr=3e-3 seed=1
    python -m benchmarks.pilot --table          # the sweep so far against params.yaml, best first per run

`--bound K` also scores the trained model's importance-weighted bound on the validation images (K samples per
image; on binarized images an upper bound on their NLL), the figure to choose an IWAE recipe on: its -ELBO is
looser than an ELBO-trained model's by design.

(benchmarks/pilots_test_set.jsonl keeps the earlier pilots, scored on the test
set; nothing is chosen from them any more.)
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
from ruamel.yaml import YAML

from benchmarks.common import load_images, train_scratch
from vae.config import TRAIN_KEYS, ParamsError, load_params, train_config, unread_settings, validate_train
from vae.data import scored_test_images
from vae.evaluation import iw_estimates

RESULTS = Path("benchmarks/pilots.jsonl")


KEYS = (*TRAIN_KEYS, "seed")


def parse_overrides(items: list[str]) -> dict:
    over = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise SystemExit(f"pilot: {item!r} is not KEY=VALUE with KEY among: {', '.join(KEYS)}")
        over[key] = YAML(typ="safe").load(value)  # YAML 1.2, as params.yaml: 5e-4 is a float
    if not isinstance(over.get("seed", 0), int) or over.get("seed", 0) < 0:
        raise SystemExit(f"pilot: seed must be an integer >= 0, got {over['seed']!r}")
    return over


def validation_split(params: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(training images minus the last data.validation, those last images), as the stages load data."""
    images, _ = load_images(params["data"]["dataset"])
    n = params["data"]["validation"]
    return images[:-n], images[-n:]


def differences(settings: dict, params: dict, run: str) -> dict:
    """Where a pilot's train settings differ from what params.yaml now gives its run."""
    recipe, family = run.split("-")[:2]
    base = train_config(params, recipe, family, 0) if recipe in params["recipe"] else {**params["train"], "seed": 0}
    unused = {"device"} | unread_settings(settings)
    return {k: v for k, v in settings.items() if k not in unused and base.get(k) != v}


@torch.no_grad()
def validation_bound(model, val_x: torch.Tensor, k: int, ev: dict) -> dict:
    """The IW bound of K samples per validation image, as the evaluate stage computes a binarized run's
    (eval.seed, eval.nll_batch images a batch), with its standard error over the images."""
    g = torch.Generator().manual_seed(ev["seed"])
    model.eval()
    bound = torch.cat([iw_estimates(model, xb, k, g)[0] for xb in val_x.split(ev["nll_batch"])])
    return {
        "val_iw_bound": round(bound.mean().item(), 3),
        "val_iw_bound_se": round((bound.std() / math.sqrt(len(bound))).item(), 3),
        "val_iw_samples": k,
    }


def table(path: Path, params: dict) -> None:
    """Each pilot against params.yaml as it is now: `-` is the run exactly as the pipeline trains it (its own
    recipe's, or `train` for a recipe that no longer exists)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # Best first per run: by the IW bound where a pilot scored it (an IWAE's -ELBO is looser by design), else -ELBO.
    rows.sort(key=lambda r: (r["run"], "val_iw_bound" not in r, r.get("val_iw_bound", r["val_total"])))
    print(f"{'run':<22}{'differs from params.yaml':<40}{'val -ELBO':>10}{'train':>9}{'KL':>7}{'min':>6}")
    for r in rows:
        diff = " ".join(f"{k}={v}" for k, v in differences(r["settings"], params, r["run"]).items()) or "-"
        if "diverged_in_epoch" in r:
            diff += f" (diverged in epoch {r['diverged_in_epoch']})"
        if "val_iw_bound" in r:
            diff += f" [IW bound K={r['val_iw_samples']}: {r['val_iw_bound']:.2f} ± {r['val_iw_bound_se']:.2f}]"
        print(
            f"{r['run']:<22}{diff:<40}{r['val_total']:>10.2f}{r['train_total']:>9.2f}"
            f"{r['val_kl']:>7.2f}{r['minutes']:>6.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", nargs="?")
    ap.add_argument("family", nargs="?")
    ap.add_argument("z", nargs="?", type=int)
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the recipe's train settings")
    ap.add_argument("--results", type=Path, default=RESULTS, help="JSON-lines file the result is appended to")
    ap.add_argument("--table", action="store_true", help="print the results file as a table and exit")
    ap.add_argument(
        "--bound", type=int, metavar="K", help="also score the IW bound of K samples on the validation images"
    )
    args = ap.parse_args()
    try:
        params = load_params()
    except ParamsError as e:
        raise SystemExit(f"pilot: {e}") from None
    if args.table:
        return table(args.results, params)
    if args.z is None:
        ap.error("give RECIPE FAMILY Z [KEY=VALUE ...], or --table")
    if args.recipe not in params["recipe"]:
        ap.error(f"unknown recipe {args.recipe!r}; params.yaml defines: {', '.join(params['recipe'])}")
    if args.family not in params["models"]:
        ap.error(f"unknown family {args.family!r}; params.yaml defines: {', '.join(params['models'])}")
    over = parse_overrides(args.overrides)
    settings = {**train_config(params, args.recipe, args.family, 0), **over}
    try:
        validate_train(settings)  # the recipe is valid already, so an error names an override
    except ParamsError as e:
        raise SystemExit(f"pilot: override {e}") from None
    name = "-".join([args.recipe, args.family, str(args.z)] + [f"{k}={v}" for k, v in over.items()])
    t0 = time.perf_counter()
    # The loop reports its held-out set as "test": here that is the validation split, binarized once (as the
    # test set is) for a pilot on binarized images.
    train_x, val_x = validation_split(params)
    val_x = scored_test_images(val_x, settings["binarize"])
    model, history = train_scratch(name, args.family, args.z, params, settings, train_x, val_x)
    # A run that blew up ends with a non-finite row (vae.training stops there): score the epoch before it
    # and say so, rather than write NaN into the table.
    diverged = not all(math.isfinite(v) for v in history[-1].values())
    last = history[-2] if diverged and len(history) > 1 else history[-1]
    # `settings` is every train setting the pilot used, so a row stays true when the recipe changes later.
    result = {
        "run": f"{args.recipe}-{args.family}-{args.z}",
        "overrides": over,
        "settings": settings,
        "scored_on": f"validation: the last {params['data']['validation']} training images"
        + (", binarized once" if settings["binarize"] != "none" else ""),
        **{f"val_{t}": round(last[f"test_{t}"], 3) for t in ("total", "recon", "kl")},
        "train_total": round(last["train_total"], 3),
        "epochs": len(history),
        **({"diverged_in_epoch": len(history)} if diverged else {}),
        **(validation_bound(model, val_x, args.bound, params["eval"]) if args.bound else {}),
        "minutes": round((time.perf_counter() - t0) / 60, 1),
    }
    print(json.dumps(result))
    with args.results.open("a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
