"""Where each stage reads and writes; dvc.yaml declares the same paths."""
from pathlib import Path

DATA = Path("data/mnist")
METRICS = Path("metrics")
PLOTS = Path("plots")


def model(run: str) -> Path:
    return Path("models") / f"{run}.pt"


def checkpoint(run: str) -> Path:
    return Path("checkpoints") / f"{run}.pt"


def logs(run: str) -> Path:
    return Path("logs") / run


def history(run: str) -> Path:
    return METRICS / "history" / f"{run}.csv"


def metrics(run: str) -> Path:
    return METRICS / "runs" / f"{run}.json"


def run_plots(run: str) -> Path:
    return PLOTS / run
