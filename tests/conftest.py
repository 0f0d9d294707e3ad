import gzip
import os
from pathlib import Path

import pytest
import torch

from vae.data import FILES, MIRROR_ENV, encode_idx


def make_mirror(directory: Path, seed: int = 0) -> Path:
    """A mirror of synthetic MNIST-shaped IDX files: right format and counts, fake pixels."""
    g = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for key, (filename, _, count) in FILES.items():
        if key.endswith("images"):
            t = (torch.rand(count, 28, 28, generator=g) < 0.15).to(torch.uint8) * 255
        else:
            t = torch.randint(0, 10, (count,), generator=g, dtype=torch.uint8)
        (directory / filename).write_bytes(gzip.compress(encode_idx(t), compresslevel=1))
    return directory


@pytest.fixture(scope="session")
def mnist_mirror(tmp_path_factory) -> str:
    """The real offline mirror when $VAE_MNIST_MIRROR is set (CI), else a generated one."""
    return os.environ.get(MIRROR_ENV) or str(make_mirror(tmp_path_factory.mktemp("mirror")))


@pytest.fixture(scope="session")
def real_mirror() -> Path:
    m = os.environ.get(MIRROR_ENV)
    if not m:
        pytest.skip(f"${MIRROR_ENV} is not set: no real MNIST mirror on this machine")
    return Path(m)
