"""params.yaml as the stages read it, and the names of runs and cells.

Only `check` validates the file (vae/config.py); every other stage runs after it (each depends on
its output) and reads here, so a change to validation reruns `check` alone. ruamel.yaml reads YAML 1.2
(PyYAML would read `1e-3` as a string).
"""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from vae.errors import StageError


class ParamsError(StageError, ValueError):
    """A param is missing, mistyped or out of range; the message names the key."""


def read_params(path: str | Path = "params.yaml") -> dict:
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
    return params


def run_name(recipe: str, family: str, z: int, seed: int) -> str:
    """The name shared by a run's DVC stages and its files: `tuned-conv-2-0` (seed last)."""
    return f"{recipe}-{family}-{z}-{seed}"


def cell_name(recipe: str, family: str, z: int) -> str:
    """A cell of the comparison: one (recipe, family, z), whose runs are its seeds."""
    return f"{recipe}-{family}-{z}"


# The stage group of a subset recipe's runs (dvc.yaml): train_subset@RUN, evaluate_subset@RUN, plot_subset@CELL.
SUBSET = "_subset"


def pairs(params: dict) -> list[tuple[str, str]]:
    """(recipe, family) of every cell group: `recipes` x `families`, then `subset_recipes` x `subset_families`
    (recipes too costly for every family; DVC's matrix is a full product, so they are a stage group of their own)."""
    full = [(r, f) for r in params["recipes"] for f in params["families"]]
    return full + [(r, f) for r in params.get("subset_recipes") or [] for f in params.get("subset_families") or []]


def runs(params: dict) -> list[tuple[str, str, int, int]]:
    """(recipe, family, z, seed) of every run, in the order of dvc.yaml's matrices."""
    return [(r, f, z, s) for r, f in pairs(params) for z in params["latent_dims"] for s in params["seeds"]]


def stage(params: dict, step: str, recipe: str, name: str) -> str:
    """The DVC stage that computes `step` (train, evaluate, plot) of a run or cell of `recipe`: `train@RUN`, or
    `train_subset@RUN` for a subset recipe's."""
    group = SUBSET if recipe in (params.get("subset_recipes") or []) else ""
    return f"{step}{group}@{name}"


def train_config(params: dict, recipe: str, family: str, seed: int) -> dict:
    """`train`, overridden by `recipe.RECIPE`, then by `recipe.RECIPE.families.FAMILY`, with the run's seed."""
    over = dict(params["recipe"][recipe] or {})
    per_family = over.pop("families", None) or {}
    return {**params["train"], **over, **(per_family.get(family) or {}), "seed": seed}
