"""Validation of params.yaml: a pydantic schema, and the checks across sections that a schema cannot say.

Only the `check` stage imports this module, so an edit here reruns `check` and nothing else: every other
stage reads params.yaml through vae/params.py once check has passed it. Every problem is one line that
names the dotted key (`load_params` puts the file in front), so a typo in `dvc exp run -S` fails before
any work starts, not an hour into training.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from vae.data import DATASETS
from vae.models import known_families, load_all
from vae.params import ParamsError, cell_name, read_params, run_name, runs, train_config

__all__ = ["ParamsError", "cell_name", "load_params", "run_name", "runs", "train_config", "validate"]

# Recipe and family names are parts of DVC stage names (train@RECIPE-FAMILY-Z-SEED), of the
# stages' command lines and of file names: letters, digits and '_' only.
NAME = re.compile(r"[A-Za-z0-9_]+")
STRICT = ConfigDict(extra="forbid", strict=True)


# The types of params.yaml's values; each description is the wording of its error message.
Count = Annotated[int, Field(ge=1, description="an integer >= 1")]
Count0 = Annotated[int, Field(ge=0, description="an integer >= 0")]
CountOrNull = Annotated[Count | None, Field(description="an integer >= 1 or null")]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False, description="a number > 0")]
PositiveOrNull = Annotated[Positive | None, Field(description="a number > 0 or null")]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False, description="a number >= 0")]
Counts = Annotated[list[Count], Field(min_length=1, description="a non-empty list of integers >= 1")]
Counts0 = Annotated[list[Count0], Field(min_length=1, description="a non-empty list of integers >= 0")]


class Train(BaseModel):
    """`train`: the study's protocol, which a recipe and a recipe's family override."""

    model_config = STRICT
    optimizer: Literal["adam"]
    lr: Positive
    lr_schedule: Literal["constant", "cosine"]
    kl_warmup_epochs: Count0
    free_bits: NonNegative
    epochs: Count
    batch_size: Count
    grad_clip: PositiveOrNull
    logvar_clamp: PositiveOrNull
    precision: Literal["fp32", "bf16"]
    channels_last: Literal[True, False]
    device: Literal["cpu", "cuda", "mps", "auto"]
    # none: the study's grey-level targets; dynamic: binarized MNIST, each training image re-drawn as
    # Bernoulli(grey level) whenever used and scored on one fixed binarization of the test set (vae/data.py).
    binarize: Literal["none", "dynamic"]
    # elbo: the negative ELBO (analytic KL), the study's; iwae: the importance-weighted bound of
    # iw_train_samples draws per image (Burda et al. 2016), the bound the evaluation reports, trained on.
    objective: Literal["elbo", "iwae"]
    iw_train_samples: Count


TRAIN_KEYS = tuple(Train.model_fields)
# The same keys, each optional: what a recipe, or one family in a recipe, overrides. The default is never
# read (this only validates), and an explicit null is still checked against the key's type.
OPTIONAL: dict[str, Any] = {
    k: (f.annotation, FieldInfo.merge_field_infos(f, default=None)) for k, f in Train.model_fields.items()
}
Override: Any = create_model("Override", __config__=STRICT, **OPTIONAL)


class Recipe(Override):
    families: dict[str, Override] | None = None


class Data(BaseModel):
    model_config = STRICT
    dataset: Literal[tuple(DATASETS)]  # type: ignore[valid-type]
    local_mirror: Annotated[str | None, Field(description="a directory, a file:// URL or null")]
    retries: Count
    connect_timeout_s: Positive
    read_timeout_s: Positive
    train_subset: CountOrNull
    validation: Count


class Eval(BaseModel):
    model_config = STRICT
    seed: Count0
    batch_size: Count
    z_samples: Count
    study_batch_size: Count
    iw_samples: Count
    literature_iw_samples: Count
    iw_images: CountOrNull
    iw_batch: Count
    # A standard error needs two images.
    nll_images: Annotated[Annotated[int, Field(ge=2)] | None, Field(description="an integer >= 2 or null")]
    nll_batch: Count
    active_threshold: Positive
    collapse_kl: Positive


class Plot(BaseModel):
    model_config = STRICT
    seed: Count0
    grid: Annotated[int, Field(ge=2, description="an integer >= 2")]
    quantile: Annotated[float, Field(gt=0, lt=0.5, description="a number in (0, 0.5)")]
    n_recon: Count
    n_samples: Count


class Params(BaseModel):
    model_config = STRICT
    data: Data
    recipes: Annotated[list[str], Field(min_length=1, description="a non-empty list of distinct names")]
    families: Annotated[list[str], Field(min_length=1, description="a non-empty list")]
    subset_recipes: Annotated[list[str], Field(description="a list of recipe names, maybe empty")]
    subset_families: Annotated[list[str], Field(description="a list of family names, maybe empty")]
    latent_dims: Counts
    seeds: Counts0
    models: dict[str, dict]
    train: Train
    recipe: dict[str, Recipe | None]
    eval: Eval
    plot: Plot


def family_schema(name: str) -> type[BaseModel]:
    """models.NAME's schema: the keyword arguments of the family's build function, with their types."""
    family = load_all()[name]
    hints = get_type_hints(family.build)
    fields = {}
    for key in family.params:
        kind = Count if hints.get(key, int) is int else Counts
        fields[key] = (kind, ...)
    return create_model(f"models.{name}", __config__=STRICT, **fields)  # type: ignore[call-overload]


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    params = read_params(path)
    try:
        validate(params)
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from None
    return params


def validate(params: dict) -> None:
    """The schema first, then what spans sections; the first problem raises ParamsError naming its key."""
    _schema(Params, params)
    _names_and_matrix(params)
    families = load_all()
    for fam, cfg in params["models"].items():
        _known(fam, f"models.{fam}", families)
        _schema(family_schema(fam), cfg, ("models", fam), root=cfg)
    for key in ("families", "subset_families"):
        for fam in params[key]:
            if fam not in params["models"]:
                raise ParamsError(f"missing key 'models.{fam}' (the settings of family {fam!r}, listed in '{key}')")
    _data_sizes(params["data"])
    _objectives(params)
    if not params["eval"]["literature_iw_samples"] < params["eval"]["iw_samples"]:
        raise ParamsError(
            f"'eval.literature_iw_samples' is {params['eval']['literature_iw_samples']}, not below 'eval.iw_samples' "
            f"({params['eval']['iw_samples']}): it is a bound from the first K of those samples"
        )
    if params["plot"]["seed"] not in params["seeds"]:
        raise ParamsError(
            f"'plot.seed' is {params['plot']['seed']!r}, which is not among 'seeds' {params['seeds']}: "
            "the pictures are of that seed's runs"
        )


def validate_train(train: dict, prefix: str = "") -> None:
    """A run's full `train` settings, its seed aside (benchmarks/pilot.py's, say); errors name keys as `PREFIX.KEY`."""
    settings = {k: v for k, v in train.items() if k != "seed"}
    _schema(Train, settings, tuple(prefix.split(".")) if prefix else ())
    key = elbo_only_setting(settings)
    if key:
        raise ParamsError(
            f"'{prefix + '.' if prefix else ''}{key}' is {settings[key]!r}, but the objective is iwae, whose "
            "bound has no KL term for it to act on: set it to 0 (warm-up and free bits are ELBO settings)"
        )


def elbo_only_setting(train: dict) -> str | None:
    """The first of KL warm-up and free bits that an IWAE run sets: they act on the ELBO's KL term, which the
    IWAE bound has none of, so a run asking for them would silently go without."""
    if train["objective"] != "iwae":
        return None
    return next((k for k in ("kl_warmup_epochs", "free_bits") if train[k] != 0), None)


def unread_settings(train: dict) -> set[str]:
    """Train settings that a run's training never reads: the IWAE's K means nothing to the ELBO, so a run's
    settings (stages/check.py) leave it out, and sweeping K reruns only the IWAE runs."""
    return {"iw_train_samples"} if train.get("objective", "elbo") != "iwae" else set()


def _names_and_matrix(params: dict) -> None:
    names, defs = params["recipes"], params["recipe"]
    for name in names:
        _name(name, "recipe", "recipes")
    if len(set(names)) != len(names):
        raise ParamsError(f"'recipes' must be a non-empty list of distinct names, got {names!r}")
    for name in names:
        if name not in defs:
            raise ParamsError(
                f"'recipes' lists {name!r} but 'recipe.{name}' is not defined; defined: {', '.join(map(str, defs))}"
            )
    for name, over in defs.items():
        _name(name, "recipe", "recipe")
        for fam in (over or {}).get("families") or {}:
            _known(fam, f"recipe.{name}.families.{fam}")
    _subset(params)
    for key in ("families", "subset_families"):
        for f in params[key]:
            _name(f, "family", key)
            _known(f, key)
    for key, what in (
        ("families", "family"),
        ("subset_families", "family"),
        ("latent_dims", "size"),
        ("seeds", "seed"),
    ):
        if len(set(params[key])) != len(params[key]):
            raise ParamsError(f"'{key}' lists a {what} twice: {params[key]!r}")


def _subset(params: dict) -> None:
    """Each subset recipe is defined, distinct, and not also in `recipes` (the two stage groups would write one
    run's files twice, which DVC refuses), and it has families to run on."""
    subset, defs = params["subset_recipes"], params["recipe"]
    for name in subset:
        _name(name, "recipe", "subset_recipes")
        if name not in defs:
            raise ParamsError(
                f"'subset_recipes' lists {name!r} but 'recipe.{name}' is not defined; defined: {', '.join(map(str, defs))}"
            )
        if name in params["recipes"]:
            raise ParamsError(
                f"recipe {name!r} is in both 'recipes' and 'subset_recipes': list it in one (every family, or "
                "subset_families only)"
            )
    if len(set(subset)) != len(subset):
        raise ParamsError(f"'subset_recipes' lists a recipe twice: {subset!r}")
    if subset and not params["subset_families"]:
        raise ParamsError(
            f"'subset_recipes' lists {', '.join(subset)} but 'subset_families' is empty: name the families they run on"
        )


def _objectives(params: dict) -> None:
    """No recipe, nor a family's override in one, asks an IWAE run for an ELBO-only setting (elbo_only_setting)."""
    for name, over in params["recipe"].items():
        for fam in [None, *((over or {}).get("families") or {})]:
            train = train_config(params, name, fam or "", 0)
            key = elbo_only_setting(train)
            if key:
                raise ParamsError(
                    f"'{setting_key(params, name, fam, key)}' is {train[key]!r}, but the objective of "
                    f"{'recipe ' + name + (' for ' + fam if fam else '')} is iwae, whose bound has no KL term "
                    "for it to act on: set it to 0 (warm-up and free bits are ELBO settings)"
                )


def setting_key(params: dict, recipe: str, family: str | None, key: str) -> str:
    """The most specific key that sets `key` for (recipe, family): the one to change."""
    over = params["recipe"][recipe] or {}
    if family and key in ((over.get("families") or {}).get(family) or {}):
        return f"recipe.{recipe}.families.{family}.{key}"
    return f"recipe.{recipe}.{key}" if key in over else f"train.{key}"


def _known(family: str, key: str, families: typing.Iterable[str] | None = None) -> None:
    known = list(families or known_families())
    if family not in known:
        hint = difflib.get_close_matches(str(family), known, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        where = (
            f"'{key}' has unknown family {family!r}"
            if key in ("families", "subset_families")
            else f"'{key}': unknown family"
        )
        raise ParamsError(f"{where}{did}; known families: {', '.join(known)} (one file each in vae/families/)")


def _name(v, what: str, key: str) -> None:
    if not (isinstance(v, str) and NAME.fullmatch(v)):
        raise ParamsError(
            f"{what} name {v!r} in '{key}' must be letters, digits and '_' only: "
            "it is part of DVC stage names (train@RECIPE-FAMILY-Z-SEED)"
        )


def _data_sizes(data: dict) -> None:
    n_train = DATASETS[data["dataset"]].files["train_images"].examples
    if data["train_subset"] is not None and data["train_subset"] > n_train:
        raise ParamsError(
            f"'data.train_subset' is {data['train_subset']}, but {data['dataset']} has "
            f"{n_train} training images; use at most {n_train}, or null for all"
        )
    if data["validation"] >= n_train:
        raise ParamsError(
            f"'data.validation' is {data['validation']}, but {data['dataset']} has {n_train} "
            f"training images; hold out fewer than {n_train}"
        )


# --- pydantic's errors, in our words ------------------------------------------------------------


def _schema(schema: type[BaseModel], data, prefix: tuple[str, ...] = (), root=None) -> None:
    try:
        schema.model_validate(data)
    except ValidationError as e:
        # A mistyped key is both unknown and missing: name the unknown one, whose hint says what was meant.
        first = min(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        raise ParamsError(_message(schema, first, prefix, data if root is None else root)) from None


def _message(schema: type[BaseModel], err, prefix: tuple[str, ...], data) -> str:
    """One line naming the dotted key: a list's bad item is shown as the whole list."""
    loc, kind, value = [str(p) for p in err["loc"]], err["type"], err["input"]
    field, parent, depth = _field(schema, loc)
    key = ".".join((*prefix, *loc[:depth]))
    if depth < len(loc):  # an item of a list: the list
        value = _get(data, loc[:depth])
    if kind == "missing":
        return f"missing key '{key}'"
    if kind == "extra_forbidden":
        allowed = list(parent.model_fields) if parent else []
        hint = difflib.get_close_matches(loc[-1], allowed, n=1)
        did = f" (did you mean '{'.'.join((*prefix, *loc[:-1], hint[0]))}'?)" if hint else ""
        return f"unknown key '{key}'{did}; allowed: {', '.join(allowed)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"'{key}' must be a mapping, got {value!r}"
    choices = _literal(field)
    if choices is not None:
        return f"'{key}' is {value!r}; allowed: {', '.join(map(str, choices))}"
    what = field.description if field is not None and field.description else err["msg"].lower()
    return f"'{key}' must be {what}, got {value!r}"


def _field(schema, loc: list[str]):
    """(FieldInfo, its model, how many parts of loc name it) for the innermost field that loc reaches."""
    model, field, depth = schema, None, 0
    while depth < len(loc) and isinstance(model, type) and issubclass(model, BaseModel):
        field = model.model_fields.get(loc[depth])
        if field is None:
            return None, model, len(loc)
        depth += 1
        inner = _unwrap(field.annotation)
        if get_origin(inner) is dict and depth < len(loc):  # recipe.NAME, models.NAME: a key, then a model
            inner, depth = _unwrap(get_args(inner)[1]), depth + 1
            if depth == len(loc):
                return None, model, depth
        if get_origin(inner) is list:
            return field, model, depth
        model = inner
    return field, model if depth < len(loc) else _parent(schema, loc), depth


def _parent(schema, loc: list[str]):
    """The model holding the last part of loc (for the keys an unknown one could have meant)."""
    model = schema
    for part in loc[:-1]:
        f = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if f is None:  # a dict's key
            continue
        inner = _unwrap(f.annotation)
        model = _unwrap(get_args(inner)[1]) if get_origin(inner) is dict else inner
    return model


def _unwrap(t):
    """X from X | None, Annotated[X, ...]."""
    while True:
        if get_origin(t) is Annotated:
            t = get_args(t)[0]
        elif get_origin(t) in (typing.Union, types.UnionType):
            t = next(a for a in get_args(t) if a is not type(None))
        else:
            return t


def _literal(field):
    t = _unwrap(field.annotation) if field is not None else None
    return get_args(t) if get_origin(t) is Literal else None


def _get(data, loc: list[str]):
    for part in loc:
        data = data[part] if isinstance(data, dict) else data
    return data
