"""Training throughput: the project's path against a reference written the common way.

For every family (z = 2) it trains the same model at the same batch size in two
ways, alternating between them `--rounds` times:

  (a) the project's own path: vae.training.train, through benchmarks/common.py
      (tensors resident in memory, BCE-with-logits, fused Adam, channels_last,
      flushed denormals), including its per-epoch test pass and checkpoint;
  (b) a reference: torchvision's MNIST (or FashionMNIST) + DataLoader + ToTensor,
      sigmoid + BCELoss, plain Adam, default threads, the same model.

Each measurement trains for about `--seconds` of wall time, sized by untimed
warm-ups (the first pays one-time costs; then doubled until one lasts a second),
so that short runs' noise averages out. Per family it prints the median and range (min-max) over
rounds of each path's images per second and of their ratio; then the geometric
mean of the ratios (each round's, as median and range); then an estimate of the
study's training time from (a)'s median rates. It reads params.yaml and data/DATASET
(`dvc repro download` first).

    python -m benchmarks.throughput [--seconds 15] [--rounds 3] [--families conv residual]
    python -m benchmarks.throughput --seconds 0.5 --rounds 1    # a quick check that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from benchmarks.common import load_images, train_scratch
from stages.common import stage_main
from vae import paths
from vae.config import load_params
from vae.data import DATASETS
from vae.models import build_model

# torchvision's class for each data set; it reads root/<class name>/raw/<uncompressed IDX files>.
TORCHVISION = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}


def reference_run(family: str, cfg: dict, dataset, images: int, batch_size: int, lr: float) -> tuple[int, float]:
    """(images trained, seconds) of the common recipe, over at least `images` images."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    torch.manual_seed(0)
    model = build_model(family, 2, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = 0
    t0 = time.perf_counter()
    while n < images:
        for x, _ in loader:
            logits, mu, logvar = model(x)
            recon = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (recon + kl) / len(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(x)
            if n >= images:
                break
    return n, time.perf_counter() - t0


def project_run(
    family: str, params: dict, settings: dict, train_x: torch.Tensor, test_x: torch.Tensor, images: int
) -> tuple[int, float]:
    """(images trained, seconds) of vae.training.train: whole epochs over the first `images`
    training images, or over all of them as often as `images` needs."""
    n = min(images, len(train_x))
    epochs = math.ceil(images / n)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch lines would break up the table
        train_scratch(f"{family}-2", family, 2, params, {**settings, "epochs": epochs}, train_x[:n], test_x)
    return n * epochs, time.perf_counter() - t0


def sized(run, batch_size: int, seconds: float) -> int:
    """Images for a measurement of about `seconds`, from untimed warm-ups of `run` doubled until
    one lasts min(1 s, seconds)."""
    images = 10 * batch_size
    run(images)  # first-call costs: the first optimiser imports torch._dynamo (~1.5 s), kernels are chosen
    while True:
        done, took = run(images)
        if took >= min(1.0, seconds):
            return max(batch_size, round(done / took * seconds / batch_size) * batch_size)
        images *= 2


def measure(
    family: str, params: dict, data: tuple[torch.Tensor, torch.Tensor], reference_data, seconds: float, rounds: int
) -> tuple[list[float], list[float]]:
    """Images per second of (a) and of (b) in each of `rounds` alternating rounds."""
    settings = {**params["train"], "seed": params["seeds"][0]}  # the study's protocol; the seed changes no speed

    def a(images):
        torch.set_flush_denormal(True)  # as every stage does
        return project_run(family, params, settings, *data, images)

    def b(images):
        torch.set_flush_denormal(False)  # the common recipe does not
        return reference_run(
            family, params["models"][family], reference_data, images, settings["batch_size"], settings["lr"]
        )

    size_a, size_b = sized(a, settings["batch_size"], seconds), sized(b, settings["batch_size"], seconds)
    rates_a, rates_b = [], []
    for _ in range(rounds):
        rates_a.append(rate(a, size_a))
        rates_b.append(rate(b, size_b))
    return rates_a, rates_b


def rate(run, images: int) -> float:
    done, took = run(images)
    return done / took


def torchvision_dataset(root: Path, dataset: str):
    """torchvision's data set of `dataset`'s training images, laid out under root from data/DATASET's IDX files."""
    cls = TORCHVISION[dataset]
    raw = root / cls.__name__ / "raw"
    raw.mkdir(parents=True)
    for f in DATASETS[dataset].files.values():
        (raw / f.idx_name).write_bytes((paths.data(dataset) / f.idx_name).read_bytes())
    return cls(str(root), train=True, download=False, transform=transforms.ToTensor())


def train_flops_per_image(family: str, cfg: dict, batch_size: int) -> float:
    """FLOPs of one forward + backward pass, per image, as counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(family, 2, cfg)
    x = torch.rand(batch_size, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        logits, mu, logvar = model(x)
        F.binary_cross_entropy_with_logits(logits, x).backward()
    return counter.get_total_flops() / batch_size


def matmul_gflops(n: int = 1024, repeat: int = 20) -> float:
    """The machine's float32 matrix-multiply rate: the ceiling for arithmetic-bound models."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e9


def spread(values: list[float], fmt: str) -> str:
    """`median [min-max]`."""
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def geometric_mean(values) -> float:
    return math.exp(statistics.mean(math.log(v) for v in values))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="wall time of each measurement (default 15)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of (a) and (b) (default 3)")
    ap.add_argument("--families", nargs="*", help="families to measure (default: params.yaml's)")
    args = ap.parse_args()
    params = load_params()
    settings, dataset = params["train"], params["data"]["dataset"]
    families = args.families or params["families"]
    unknown = set(families) - set(params["models"])
    if unknown:
        ap.error(f"unknown families {sorted(unknown)}; known: {', '.join(params['models'])}")
    train_x, test_x = load_images(dataset)
    data = (train_x, test_x[:128])  # (a)'s per-epoch test pass, kept small

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batches of {settings['batch_size']}, "
        f"~{args.seconds:g} s per measurement, alternating rounds: {args.rounds}; img/s as median [min-max]"
    )
    print(f"float32 matmul rate (1024^3): {matmul_gflops():.0f} GFLOP/s")
    print(f"{'family':<12}{'(a) img/s':>22}{'(b) img/s':>22}{'(a)/(b)':>20}{'MFLOP/img':>11}{'(a) GFLOP/s':>13}")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        reference_data = torchvision_dataset(Path(tmp), dataset)
        for family in families:
            rates[family] = a, b = measure(family, params, data, reference_data, args.seconds, args.rounds)
            flops = train_flops_per_image(family, params["models"][family], settings["batch_size"])
            print(
                f"{family:<12}{spread(a, '.0f'):>22}{spread(b, '.0f'):>22}"
                f"{spread([x / y for x, y in zip(a, b)], '.2f'):>20}{flops / 1e6:>11.1f}"
                f"{statistics.median(a) * flops / 1e9:>13.1f}",
                flush=True,
            )
    per_round = [geometric_mean(a[r] / b[r] for a, b in rates.values()) for r in range(args.rounds)]
    print(f"geometric mean of the ratios over {', '.join(families)}: {spread(per_round, '.2f')}")
    study_estimate(params, families, {f: statistics.median(a) for f, (a, _) in rates.items()}, len(train_x))


def study_estimate(params: dict, families: list[str], rate: dict[str, float], n_train: int) -> None:
    epochs = params["train"]["epochs"]
    images = n_train * epochs * len(params["latent_dims"]) * len(params["recipes"]) * len(params["seeds"])
    minutes = sum(images / rate[f] for f in families) / 60
    print(
        f"estimated training time of the study for these families ({epochs} epochs, recipes {params['recipes']}, "
        f"z in {params['latent_dims']}, seeds {params['seeds']}), one stage at a time, from (a)'s median rates "
        f"at z=2: {minutes:.0f} min (an estimate, not a measured dvc repro)"
    )


if __name__ == "__main__":
    stage_main("throughput", main)
