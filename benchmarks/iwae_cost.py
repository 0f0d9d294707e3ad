"""What the importance-weighted objective costs per training step, against the ELBO, for every family:
the median time of a few steps at batch 128 and one thread (K decoder passes per image instead of one).

    OMP_NUM_THREADS=1 python -m benchmarks.iwae_cost              # K = 5 and 20, z = 2
    python -m benchmarks.iwae_cost --k 5 50 --steps 10
"""

import argparse
import statistics
import time

import torch

from stages.common import stage_main
from vae.losses import importance_weighted, iwae_objective, negative_elbo, training_objective
from vae.models import build_model
from vae.params import read_params


def step_seconds(model, opt, x: torch.Tensor, k: int | None, steps: int) -> float:
    """Median seconds of an optimiser step; k None: the ELBO, else the IWAE bound of k samples."""
    g = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 2):  # two warm-up steps, not timed
        t0 = time.perf_counter()
        if k is None:
            loss = training_objective(negative_elbo(model, x, torch.randn(len(x), model.z_dim, generator=g)))
        else:
            loss = iwae_objective(importance_weighted(model, x, torch.randn(k, len(x), model.z_dim, generator=g))[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--z", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    params = read_params()
    x = torch.bernoulli(
        torch.rand(params["train"]["batch_size"], 1, 28, 28, generator=torch.Generator().manual_seed(0))
    )
    print(f"{'family':<14}{'ELBO ms/step':>14}" + "".join(f"{f'IWAE K={k}':>14}" for k in args.k))
    for family in params["families"]:
        torch.manual_seed(0)
        model = build_model(family, args.z, params["models"][family]).to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        elbo = step_seconds(model, opt, x, None, args.steps)
        iwae = [step_seconds(model, opt, x, k, args.steps) for k in args.k]
        print(f"{family:<14}{elbo * 1e3:>14.1f}" + "".join(f"{t * 1e3:>9.1f} ({t / elbo:.1f}x)" for t in iwae))


if __name__ == "__main__":
    stage_main("iwae_cost", main)
