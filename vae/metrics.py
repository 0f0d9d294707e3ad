"""The metrics each run reports and the comparison shows, in one table: the evaluate stage writes these
keys, compare aggregates them in this order and ranks by their direction, and the comparison's legend
says which are ranked from here. Also the one definition of a diverged run, which both use. Only the legend's prose lives in vae/report.py, so rewording it reruns
compare alone, not every evaluation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from vae.models import N_PIXELS


class Metric(NamedTuple):
    header: str  # the comparison's column header
    better: str | None  # "min" or "max": ranked, the best bold; None: no better direction, never bold
    cell: bool = False  # also in metrics/cells/CELL.json, the row `dvc metrics show` prints per cell
    # The header in a binarized recipe's table (train.binarize: dynamic), where the column means more: None, the same.
    binarized: str | None = None


METRICS = {
    "total": Metric("−ELBO", "min", cell=True),
    "recon": Metric("reconstruction", "min", cell=True),
    # A lower KL is not a better model: it is another point on the rate-distortion trade-off.
    "kl": Metric("KL", None, cell=True),
    # These three come from the same K importance samples per image, on the IW subset of test images
    # (for a binarized run, on eval.nll_images: all of them by default).
    "subset_total": Metric("−ELBO (IW subset)", "min", binarized="−ELBO (IW images)"),
    # On binarized MNIST the bound bounds a true likelihood: an upper bound on the NLL, the literature's figure.
    "iw_bound": Metric("IW bound", "min", cell=True, binarized="NLL upper bound (IW)"),
    # Diagnostics, never ranked: a decoder that ignores z has a gap of 0, and MI is a rate, like KL.
    "elbo_gap": Metric("ELBO gap", None),
    # Ranked cells have no collapsed seed, so all their z units are active: nothing to rank.
    "active_units": Metric("active units", None),
    "mutual_info": Metric("MI", None, cell=True),
}

# Reported by binarized runs alone, after METRICS (a grey-level run's files keep their bytes): the NLL bound's
# standard error over the test images, the noise a finite test set leaves in a likelihood claim.
BINARIZED_METRICS = {
    "iw_bound_se": Metric("± SE over images", None, cell=True),
    # The same bound at the K of the published figures it is set beside (eval.literature_iw_samples), from the
    # first K of the same importance samples, with its standard error over the same images.
    "iw_bound_lit": Metric("NLL upper bound (IW, published K)", "min", cell=True),
    "iw_bound_lit_se": Metric("± SE over images (published K)", None, cell=True),
}

# A run diverged when the loss became NaN or infinite (training stops there, vae/training.py), or when its
# last epoch's mean training -ELBO is over ten times that of a decoder that predicts 0.5 for every pixel
# (N_PIXELS * ln 2 = 543 nats; an untrained model starts near it): the optimisation blew up (at the
# study's lr 0.01 a few training images can reach 1e20 nats, or every one 1e31 from the first epoch on,
# while the loss stays finite), so its test figures describe a broken model, not the family.
DIVERGED_NATS = 10 * N_PIXELS * math.log(2)


def divergence(history: list[dict]) -> str | None:
    """Why a run counts as diverged, from its per-epoch history (metrics/history/RUN.csv), or None: the one
    definition behind evaluate's `diverged` (`dvc metrics show`) and the comparison's diverged column."""
    last = {k: float(v) for k, v in history[-1].items()}
    if not all(math.isfinite(v) for v in last.values()):
        epoch = int(last["epoch"])
        kept = f"epoch {epoch - 1}'s model" if epoch > 1 else "the untrained model"
        return f"loss not finite in epoch {epoch}: training stopped there, figures of {kept}"
    if last["train_total"] > DIVERGED_NATS:
        best = min(float(r["train_total"]) for r in history)
        return f"training −ELBO {last['train_total']:.3g} in the last epoch, {best:.1f} at best"
    return None
