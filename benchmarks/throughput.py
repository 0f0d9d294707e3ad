"""Training throughput: the project's path against a reference written the common way.

For every family (z = 2) it trains the same number of steps at the same batch
size in two ways, alternating between them `--rounds` times:

  (a) the project's own path: vae.training.train (tensors resident in memory,
      BCE-with-logits, fused Adam, channels_last, flushed denormals);
  (b) a reference: torchvision MNIST + DataLoader + ToTensor, sigmoid + BCELoss,
      plain Adam, default threads, the same model.

It prints images per second of each, their ratio and the geometric mean of the
ratios, then an estimate of the whole study's training time from (a)'s rates.

    python -m benchmarks.throughput [--steps 150] [--rounds 2]
"""
from __future__ import annotations

import argparse
import gzip
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from stages.common import params_or_exit
from vae import paths
from vae.data import FILES, load_split, to_float
from vae.models import build_model
from vae.training import train


def reference_steps(family: str, cfg: dict, root: Path, steps: int, batch_size: int, lr: float) -> float:
    """Images per second of the common recipe; returns after `steps` steps."""
    ds = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True)
    torch.manual_seed(0)
    model = build_model(family, 2, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    n = 0
    for step, (x, _) in enumerate(loader):
        logits, mu, logvar = model(x)
        recon = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = (recon + kl) / len(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(x)
        if step + 1 == steps:
            break
    return n / (time.perf_counter() - t0)


def project_steps(family: str, cfg: dict, tcfg: dict, train_x: torch.Tensor, test_x: torch.Tensor,
                  steps: int) -> float:
    """Images per second of vae.training.train over exactly `steps` steps (one epoch)."""
    x = train_x[: steps * tcfg["batch_size"]]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(f"{family}-2", family, 2, cfg, {**tcfg, "epochs": 1}, x, test_x, checkpoint=Path(tmp) / "c.pt",
              log_dir=Path(tmp) / "logs", eval_seed=0, eval_batch_size=len(test_x), fp="bench")
        return len(x) / (time.perf_counter() - t0)


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
    return 2 * n ** 3 * repeat / (time.perf_counter() - t0) / 1e9


def torchvision_root(tmp: Path) -> Path:
    """torchvision's MNIST layout (root/MNIST/raw/<uncompressed IDX>) from data/mnist."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for filename, _, _ in FILES.values():
        (raw / filename[:-3]).write_bytes(gzip.decompress((paths.DATA / filename).read_bytes()))
    return tmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    params = params_or_exit("throughput")
    tcfg = params["train"]
    train_x = to_float(load_split(paths.DATA, "train")[0])
    test_x = to_float(load_split(paths.DATA, "test")[0][:128])  # (a)'s per-epoch test pass, kept small

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps of "
          f"{tcfg['batch_size']} images per measurement, {args.rounds} alternating rounds")
    peak = matmul_gflops()
    print(f"float32 matmul rate (1024^3): {peak:.0f} GFLOP/s")
    print(f"{'family':<12}{'(a) img/s':>11}{'(b) img/s':>11}{'ratio':>8}{'MFLOP/img':>11}{'(a) GFLOP/s':>13}")
    ratios, rates = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(Path(tmp))
        for family in params["families"]:
            cfg = params["models"][family]
            a, b = [], []
            for _ in range(args.rounds):
                torch.set_flush_denormal(True)
                a.append(project_steps(family, cfg, tcfg, train_x, test_x, args.steps))
                torch.set_flush_denormal(False)
                b.append(reference_steps(family, cfg, root, args.steps, tcfg["batch_size"], tcfg["lr"]))
            ra, rb = statistics.median(a), statistics.median(b)
            rates[family] = ra
            ratios.append(ra / rb)
            flops = train_flops_per_image(family, cfg, tcfg["batch_size"])
            print(f"{family:<12}{ra:>11.0f}{rb:>11.0f}{ra / rb:>8.2f}{flops / 1e6:>11.1f}"
                  f"{ra * flops / 1e9:>13.1f}", flush=True)
    print(f"geometric mean of the ratios: {math.exp(statistics.mean(map(math.log, ratios))):.2f}")

    images = (len(load_split(paths.DATA, "train")[0]) * tcfg["epochs"] * len(params["latent_dims"])
              * len(params["recipes"]))
    seconds = sum(images / r for r in rates.values())
    print(f"estimated training time of the whole study ({tcfg['epochs']} epochs, recipes {params['recipes']} x "
          f"{len(params['families'])} families x z in {params['latent_dims']}), one stage at a time, "
          f"from (a)'s rates at z=2: {seconds / 60:.0f} min (an estimate, not a measured dvc repro)")


if __name__ == "__main__":
    main()
