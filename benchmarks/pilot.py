"""Recipe pilot: train one run with a recipe's settings plus overrides and print its test losses.

How the tuned recipe was chosen: each pilot is the pipeline's own training loop
on the full data at the full epoch count, but writes nothing under the project
(no model, no DVC state), so pilots can run beside `dvc repro`. Results are
appended to a JSON-lines file, so a sweep reads as one table:

    OMP_NUM_THREADS=1 python -m benchmarks.pilot tuned deep_mlp 2 batch_size=64 lr=5e-4
    python -m benchmarks.pilot --table          # the sweep so far against params.yaml, best first per run
"""
import argparse
import json
from pathlib import Path

from ruamel.yaml import YAML

from benchmarks.common import load_mnist, train_scratch
from stages.common import params_or_exit
from vae.config import TRAIN_KEYS, ParamsError, train_config, validate_train

RESULTS = Path("benchmarks/pilots.jsonl")


def parse_overrides(items: list[str]) -> dict:
    over = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in TRAIN_KEYS:
            raise SystemExit(f"pilot: {item!r} is not KEY=VALUE with KEY among: {', '.join(TRAIN_KEYS)}")
        over[key] = YAML(typ="safe").load(value)  # YAML 1.2, as params.yaml: 5e-4 is a float
    return over


def differences(settings: dict, params: dict, run: str) -> dict:
    """Where a pilot's train settings differ from what params.yaml now gives its run."""
    recipe, family, _ = run.split("-")
    base = train_config(params, recipe, family) if recipe in params["recipe"] else params["train"]
    return {k: v for k, v in settings.items() if k != "device" and base.get(k) != v}


def table(path: Path, params: dict) -> None:
    """Each pilot against params.yaml as it is now: `-` is the run exactly as the pipeline trains it."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (r["run"], r["test_total"]))
    print(f"{'run':<22}{'differs from params.yaml':<40}{'test -ELBO':>11}{'train':>9}{'KL':>7}{'min':>6}")
    for r in rows:
        diff = " ".join(f"{k}={v}" for k, v in differences(r["settings"], params, r["run"]).items()) or "-"
        print(f"{r['run']:<22}{diff:<40}{r['test_total']:>11.2f}{r['train_total']:>9.2f}"
              f"{r['test_kl']:>7.2f}{r['minutes']:>6.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", nargs="?")
    ap.add_argument("family", nargs="?")
    ap.add_argument("z", nargs="?", type=int)
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the recipe's train settings")
    ap.add_argument("--results", type=Path, default=RESULTS, help="JSON-lines file the result is appended to")
    ap.add_argument("--table", action="store_true", help="print the results file as a table and exit")
    args = ap.parse_args()
    params = params_or_exit("pilot")
    if args.table:
        return table(args.results, params)
    if args.z is None:
        ap.error("give RECIPE FAMILY Z [KEY=VALUE ...], or --table")
    if args.recipe not in params["recipe"]:
        ap.error(f"unknown recipe {args.recipe!r}; params.yaml defines: {', '.join(params['recipe'])}")
    if args.family not in params["models"]:
        ap.error(f"unknown family {args.family!r}; params.yaml defines: {', '.join(params['models'])}")
    over = parse_overrides(args.overrides)
    tcfg = {**train_config(params, args.recipe, args.family), **over}
    try:
        validate_train(tcfg)  # the recipe is valid already, so an error names an override
    except ParamsError as e:
        raise SystemExit(f"pilot: override {e}") from None
    name = "-".join([args.recipe, args.family, str(args.z)] + [f"{k}={v}" for k, v in over.items()])
    _, history = train_scratch(name, args.family, args.z, params, tcfg, *load_mnist())
    last = history[-1]
    # `settings` is every train setting the pilot used, so a row stays true when the recipe changes later.
    result = {"run": f"{args.recipe}-{args.family}-{args.z}", "overrides": over, "settings": tcfg,
              **{k: round(last[k], 3) for k in ("test_total", "test_recon", "test_kl", "train_total")},
              "epochs": len(history), "minutes": round(sum(r["seconds"] for r in history) / 60, 1)}
    print(json.dumps(result))
    with args.results.open("a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
