"""The metrics each run reports and the comparison shows, in one table: the evaluate stage writes these
keys, compare aggregates them in this order and ranks by their direction, and the comparison's legend
says which are ranked from here. Only the legend's prose lives in vae/report.py, so rewording it reruns
compare alone, not every evaluation.
"""

from __future__ import annotations

from typing import NamedTuple


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
    "elbo_gap": Metric("ELBO gap", "min"),
    # Ranked cells have no collapsed seed, so all their z units are active: nothing to rank.
    "active_units": Metric("active units", None),
    "mutual_info": Metric("MI", "max", cell=True),
}

# Reported by binarized runs alone, after METRICS (a grey-level run's files keep their bytes): the NLL bound's
# standard error over the test images, the noise a finite test set leaves in a likelihood claim.
BINARIZED_METRICS = {
    "iw_bound_se": Metric("± SE over images", None, cell=True),
}
