"""Where each stage reads and writes; dvc.yaml declares the same paths.

`checkpoints/` and `logs/` are scratch the train stage manages, outside the DVC
graph: an epoch checkpoint lives only while its run is unfinished, and
TensorBoard logs carry wall-clock times, which no tracked output may.
"""

from pathlib import Path

METRICS = Path("metrics")
PLOTS = Path("plots")
CHECKED = Path("checks/params.ok")
SETTINGS = Path("checks/settings")


def settings(recipe: str, family: str) -> Path:
    """The training settings of one recipe and family, as `check` resolves them: train@ depends on
    this file, not on all of `train` and `recipe.RECIPE`, so a run reruns only when its own change."""
    return SETTINGS / f"{recipe}-{family}.json"


def data(dataset: str) -> Path:
    return Path("data") / dataset


def model(run: str) -> Path:
    return Path("models") / f"{run}.pt"


def checkpoint(run: str) -> Path:
    return Path("checkpoints") / f"{run}.pt"


def logs(run: str) -> Path:
    return Path("logs") / run


def history(run: str) -> Path:
    return METRICS / "history" / f"{run}.csv"


def metrics(run: str) -> Path:
    """The run's headline numbers: a DVC metric, one row of `dvc metrics show`."""
    return METRICS / "runs" / f"{run}.json"


def details(run: str) -> Path:
    """What a run's metrics row cannot hold: KL per dimension, collapse reasons, settings, study units."""
    return METRICS / "details" / f"{run}.json"


def run_plots(run: str) -> Path:
    return PLOTS / run
