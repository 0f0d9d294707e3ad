"""Load and validate params.yaml.

ruamel.yaml reads YAML 1.2 (PyYAML would read `1e-3` as a string), and every
check names the dotted key it failed on, so a typo in `dvc exp run -S` fails
before any work starts instead of an hour into training. The checks name keys
only; `load_params` puts the file in front, so other sources of settings
(benchmarks/pilot.py's overrides) reuse them under their own name.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path

from ruamel.yaml import YAML

from vae.data import DATASETS
from vae.errors import StageError
from vae.models import FAMILIES

DEVICES = ("cpu", "cuda", "mps", "auto")
OPTIMIZERS = ("adam",)
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")
# none: the study's grey-level targets; dynamic: binarized MNIST, each training image re-drawn as
# Bernoulli(grey level) whenever used and scored on one fixed binarization of the test set (vae/data.py).
BINARIZE = ("none", "dynamic")
TRAIN_KEYS = (
    "optimizer",
    "lr",
    "lr_schedule",
    "kl_warmup_epochs",
    "free_bits",
    "epochs",
    "batch_size",
    "grad_clip",
    "logvar_clamp",
    "precision",
    "channels_last",
    "device",
    "binarize",
)
# Recipe and family names are parts of DVC stage names (train@RECIPE-FAMILY-Z-SEED), of the
# stages' command lines and of file names: letters, digits and '_' only.
NAME = re.compile(r"[A-Za-z0-9_]+")


class ParamsError(StageError, ValueError):
    """A param is missing, mistyped or out of range; the message names the key."""


TOP_LEVEL = (
    "data",
    "recipes",
    "families",
    "latent_dims",
    "seeds",
    "models",
    "train",
    "recipe",
    "eval",
    "plot",
)


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found; run the stages from the project root")
    try:
        with path.open() as f:
            params = YAML(typ="safe", pure=True).load(f)
    except Exception as e:  # ruamel raises a family of parser errors
        raise ParamsError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    try:
        validate(params)
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from None
    return params


def run_name(recipe: str, family: str, z: int, seed: int) -> str:
    """The name shared by a run's DVC stages and its files: `tuned-conv-2-0` (seed last)."""
    return f"{recipe}-{family}-{z}-{seed}"


def cell_name(recipe: str, family: str, z: int) -> str:
    """A cell of the comparison: one (recipe, family, z), whose runs are its seeds."""
    return f"{recipe}-{family}-{z}"


def runs(params: dict) -> list[tuple[str, str, int, int]]:
    """(recipe, family, z, seed) of every run, in the order of dvc.yaml's matrix."""
    return [
        (r, f, z, s)
        for r in params["recipes"]
        for f in params["families"]
        for z in params["latent_dims"]
        for s in params["seeds"]
    ]


def train_config(params: dict, recipe: str, family: str, seed: int) -> dict:
    """`train`, overridden by `recipe.RECIPE`, then by `recipe.RECIPE.families.FAMILY`, with the run's seed."""
    over = dict(params["recipe"][recipe] or {})
    per_family = over.pop("families", None) or {}
    return {**params["train"], **over, **(per_family.get(family) or {}), "seed": seed}


# --- validation -------------------------------------------------------------


def _section(params: dict, key: str, allowed: tuple[str, ...]) -> dict:
    if key not in params:
        raise ParamsError(f"missing section '{key}'")
    sec = params[key]
    if not isinstance(sec, dict):
        raise ParamsError(f"'{key}' must be a mapping, got {sec!r}")
    _reject_unknown(sec, key, allowed, f"allowed: {', '.join(allowed)}")
    for k in allowed:
        if k not in sec:
            raise ParamsError(f"missing key '{key}.{k}'")
    return sec


def _reject_unknown(sec: dict, prefix: str, allowed: tuple[str, ...], listing: str) -> None:
    for k in sec:
        if k not in allowed:
            hint = difflib.get_close_matches(str(k), allowed, n=1)
            dotted = lambda name: f"{prefix}.{name}" if prefix else name  # noqa: E731
            did = f" (did you mean '{dotted(hint[0])}'?)" if hint else ""
            raise ParamsError(f"unknown key '{dotted(k)}'{did}; {listing}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(sec: dict, key: str, name: str, lo: int = 1, optional: bool = False):
    v = sec[key]
    if optional and v is None:
        return
    if not _is_int(v) or v < lo:
        extra = " or null" if optional else ""
        raise ParamsError(f"'{name}' must be an integer >= {lo}{extra}, got {v!r}")


def _float(sec: dict, key: str, name: str, lo: float = 0.0, strict: bool = True):
    v = sec[key]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (v <= lo if strict else v < lo):
        op = ">" if strict else ">="
        raise ParamsError(f"'{name}' must be a number {op} {lo:g}, got {v!r}")


def _choice(sec: dict, key: str, name: str, allowed):
    v = sec[key]
    if v not in allowed:
        raise ParamsError(f"'{name}' is {v!r}; allowed: {', '.join(map(str, allowed))}")


def _name(v, what: str, key: str) -> None:
    if not (isinstance(v, str) and NAME.fullmatch(v)):
        raise ParamsError(
            f"{what} name {v!r} in '{key}' must be letters, digits and '_' only: "
            "it is part of DVC stage names (train@RECIPE-FAMILY-Z-SEED)"
        )


def _int_list(v, name: str, lo: int = 1):
    if not isinstance(v, list) or not v or not all(_is_int(i) and i >= lo for i in v):
        raise ParamsError(f"'{name}' must be a non-empty list of integers >= {lo}, got {v!r}")


def validate(params: dict) -> None:
    """Check every section; the first problem raises ParamsError naming its key."""
    _reject_unknown(params, "", TOP_LEVEL, f"allowed: {', '.join(TOP_LEVEL)}")
    _validate_data(params)
    _validate_matrix(params)
    _validate_models(params)
    validate_train(_section(params, "train", TRAIN_KEYS), "train")
    _validate_recipes(params)
    _validate_eval(params)
    _validate_plot(params)


def _validate_data(params: dict) -> None:
    data = _section(
        params,
        "data",
        ("dataset", "local_mirror", "retries", "connect_timeout_s", "read_timeout_s", "train_subset", "validation"),
    )
    _choice(data, "dataset", "data.dataset", DATASETS)
    if data["local_mirror"] is not None and not isinstance(data["local_mirror"], str):
        raise ParamsError(
            f"'data.local_mirror' must be a directory, a file:// URL or null, got {data['local_mirror']!r}"
        )
    _int(data, "retries", "data.retries")
    _float(data, "connect_timeout_s", "data.connect_timeout_s")
    _float(data, "read_timeout_s", "data.read_timeout_s")
    _int(data, "train_subset", "data.train_subset", optional=True)
    n_train = DATASETS[data["dataset"]].files["train_images"].examples
    if data["train_subset"] is not None and data["train_subset"] > n_train:
        raise ParamsError(
            f"'data.train_subset' is {data['train_subset']}, but {data['dataset']} has "
            f"{n_train} training images; use at most {n_train}, or null for all"
        )
    _int(data, "validation", "data.validation")
    if data["validation"] >= n_train:
        raise ParamsError(
            f"'data.validation' is {data['validation']}, but {data['dataset']} has {n_train} "
            f"training images; hold out fewer than {n_train}"
        )


def _validate_matrix(params: dict) -> None:
    """families x latent_dims x seeds (recipes are checked with their definitions)."""
    for key in ("families", "latent_dims", "seeds"):
        if key not in params:
            raise ParamsError(f"missing key '{key}'")
    fams = params["families"]
    if not isinstance(fams, list) or not fams:
        raise ParamsError(f"'families' must be a non-empty list, got {fams!r}")
    for f in fams:
        _name(f, "family", "families")
        if f not in FAMILIES:
            hint = difflib.get_close_matches(str(f), FAMILIES, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ParamsError(f"'families' has unknown family {f!r}{did}; known families: {', '.join(FAMILIES)}")
    for key, lo, what in (("families", None, "family"), ("latent_dims", 1, "size"), ("seeds", 0, "seed")):
        if lo is not None:
            _int_list(params[key], key, lo=lo)
        if len(set(params[key])) != len(params[key]):
            raise ParamsError(f"'{key}' lists a {what} twice: {params[key]!r}")


def _validate_models(params: dict) -> None:
    models = _section(params, "models", tuple(FAMILIES))
    for fam, spec in FAMILIES.items():
        cfg = _section(models, fam, tuple(spec.params))
        for k in spec.params:
            v, name = cfg[k], f"models.{fam}.{k}"
            if isinstance(v, list):
                _int_list(v, name)
            elif not _is_int(v) or v < 1:
                raise ParamsError(f"'{name}' must be an integer >= 1, got {v!r}")


def _validate_eval(params: dict) -> None:
    ev = _section(
        params,
        "eval",
        (
            "seed",
            "batch_size",
            "z_samples",
            "study_batch_size",
            "iw_samples",
            "iw_images",
            "iw_batch",
            "nll_images",
            "nll_batch",
            "active_threshold",
            "collapse_kl",
        ),
    )
    _int(ev, "seed", "eval.seed", lo=0)
    for k in ("batch_size", "z_samples", "study_batch_size", "iw_samples", "iw_batch", "nll_batch"):
        _int(ev, k, f"eval.{k}")
    _int(ev, "iw_images", "eval.iw_images", optional=True)
    _int(ev, "nll_images", "eval.nll_images", lo=2, optional=True)  # a standard error needs two images
    _float(ev, "active_threshold", "eval.active_threshold")
    _float(ev, "collapse_kl", "eval.collapse_kl")


def _validate_plot(params: dict) -> None:
    plot = _section(params, "plot", ("seed", "grid", "quantile", "n_recon", "n_samples"))
    if plot["seed"] not in params["seeds"]:
        raise ParamsError(
            f"'plot.seed' is {plot['seed']!r}, which is not among 'seeds' {params['seeds']}: "
            "the pictures are of that seed's runs"
        )
    _int(plot, "grid", "plot.grid", lo=2)
    _float(plot, "quantile", "plot.quantile")
    if not plot["quantile"] < 0.5:
        raise ParamsError(f"'plot.quantile' must be in (0, 0.5), got {plot['quantile']!r}")
    _int(plot, "n_recon", "plot.n_recon")
    _int(plot, "n_samples", "plot.n_samples")


def validate_train(train: dict, prefix: str = "") -> None:
    """Check a full set of `train` settings; errors name keys as `PREFIX.KEY` (or `KEY` with no prefix)."""

    def name(k: str) -> str:
        return f"{prefix}.{k}" if prefix else k

    _choice(train, "optimizer", name("optimizer"), OPTIMIZERS)
    _float(train, "lr", name("lr"))
    _choice(train, "lr_schedule", name("lr_schedule"), LR_SCHEDULES)
    _int(train, "kl_warmup_epochs", name("kl_warmup_epochs"), lo=0)
    _float(train, "free_bits", name("free_bits"), strict=False)
    _int(train, "epochs", name("epochs"))
    _int(train, "batch_size", name("batch_size"))
    for k in ("grad_clip", "logvar_clamp"):
        if train[k] is not None:
            _float(train, k, name(k))
    _choice(train, "precision", name("precision"), PRECISIONS)
    _choice(train, "channels_last", name("channels_last"), (True, False))
    _choice(train, "device", name("device"), DEVICES)
    _choice(train, "binarize", name("binarize"), BINARIZE)


def _validate_recipes(params: dict) -> None:
    """`recipes` lists the recipes to run; `recipe.NAME` overrides keys of `train` for that recipe,
    and `recipe.NAME.families.FAMILY` overrides them further for one family."""
    for key in ("recipes", "recipe"):
        if key not in params:
            raise ParamsError(f"missing key '{key}'")
    names, defs = params["recipes"], params["recipe"]
    if not isinstance(defs, dict):
        raise ParamsError(f"'recipe' must map recipe names to overrides of 'train', got {defs!r}")
    if (
        not isinstance(names, list)
        or not names
        or len(set(names)) != len(names)
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ParamsError(f"'recipes' must be a non-empty list of distinct names, got {names!r}")
    for name in names:
        _name(name, "recipe", "recipes")
        if name not in defs:
            raise ParamsError(
                f"'recipes' lists {name!r} but 'recipe.{name}' is not defined; "
                f"defined: {', '.join(map(str, defs)) or 'none'}"
            )
    keys = (*TRAIN_KEYS, "families")
    for name, over in defs.items():
        _name(name, "recipe", "recipe")
        if not isinstance(over or {}, dict):
            raise ParamsError(f"'recipe.{name}' must be a mapping of 'train' keys, got {over!r}")
        over = dict(over or {})
        _reject_unknown(
            over,
            f"recipe.{name}",
            keys,
            f"a recipe overrides keys of 'train' ({', '.join(TRAIN_KEYS)}) or sets 'families'",
        )
        per_family = over.pop("families", None) or {}
        if not isinstance(per_family, dict):
            raise ParamsError(
                f"'recipe.{name}.families' must map family names to overrides of 'train', got {per_family!r}"
            )
        _reject_unknown(per_family, f"recipe.{name}.families", tuple(FAMILIES), f"families: {', '.join(FAMILIES)}")
        # `train` is already valid, so any error here is in an override, named as the user wrote it.
        validate_train({**params["train"], **over}, f"recipe.{name}")
        for fam, fam_over in per_family.items():
            prefix = f"recipe.{name}.families.{fam}"
            if not isinstance(fam_over, dict):
                raise ParamsError(f"'{prefix}' must be a mapping of 'train' keys, got {fam_over!r}")
            _reject_unknown(
                fam_over, prefix, TRAIN_KEYS, f"a family override sets keys of 'train': {', '.join(TRAIN_KEYS)}"
            )
            validate_train({**params["train"], **over, **fam_over}, prefix)
