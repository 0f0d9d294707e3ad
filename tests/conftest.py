import gzip
import os
import struct
from pathlib import Path

# One torch thread per test process (and the stages they start), set before torch is imported: pytest-xdist
# runs one process per core, and OpenMP threads beyond the cores spin against each other. A test about
# threads sets its own.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from vae.data import DATASETS
from vae.download import MIRROR_ENV, MNIST_MIRROR_ENV


def encode_idx(t: torch.Tensor) -> bytes:
    """The inverse of vae.data.parse_idx, for building test mirrors."""
    t = t.to(torch.uint8).contiguous()
    header = struct.pack(">I", 0x800 | t.dim()) + struct.pack(f">{t.dim()}I", *t.shape)
    return header + t.numpy().tobytes()


def make_mirror(directory: Path, seed: int = 0, dataset: str = "mnist") -> Path:
    """A mirror of synthetic IDX files: right format and counts, fake pixels (so: unknown content)."""
    g = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for key, f in DATASETS[dataset].files.items():
        if key.endswith("images"):
            t = (torch.rand(f.examples, 28, 28, generator=g) < 0.15).to(torch.uint8) * 255
        else:
            t = torch.randint(0, 10, (f.examples,), generator=g, dtype=torch.uint8)
        (directory / f.name).write_bytes(gzip.compress(encode_idx(t), compresslevel=1))
    return directory


def make_data_mirror(root: Path) -> Path:
    """A local mirror of every registered data set, one folder each, as $VAE_DATA_MIRROR holds."""
    for i, (name, ds) in enumerate(DATASETS.items()):
        make_mirror(root / ds.folder, seed=i, dataset=name)
    return root


@pytest.fixture(scope="session")
def data_mirror(tmp_path_factory) -> str:
    """The real offline mirror when $VAE_DATA_MIRROR is set (CI: ../shared/datasets), else a generated one."""
    return os.environ.get(MIRROR_ENV) or str(make_data_mirror(tmp_path_factory.mktemp("mirror")))


@pytest.fixture(scope="session")
def real_mirror() -> Path:
    """The real offline mirror's root; tests that need real MNIST or Fashion-MNIST bytes skip without it."""
    m = os.environ.get(MIRROR_ENV)
    if not m:
        pytest.skip(f"${MIRROR_ENV} is not set: no real data mirror on this machine (CI sets it to ../shared/datasets)")
    return Path(m)


@pytest.fixture(autouse=True)
def _no_legacy_mirror(monkeypatch):
    # $VAE_MNIST_MIRROR from a user's shell would override the mirrors the tests set up.
    monkeypatch.delenv(MNIST_MIRROR_ENV, raising=False)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory, data_mirror):
    """The end-to-end smoke matrix (tests/smoke.py MATRIX), computed once by the study command on a
    LocalCluster of two 1-thread workers: (scratch folder, project, env, what the command printed)."""
    from tests.smoke import MATRIX, make_project, run_study, study_env

    tmp = tmp_path_factory.mktemp("smoke_study")
    proj = tmp / "proj"
    proj.mkdir()
    env = study_env(make_project(proj, data_mirror, MATRIX), tmp)
    r = run_study(proj, env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return tmp, proj, env, r.stdout + r.stderr


# Shared fixtures built once per pytest-xdist worker that needs them, rather than tying their tests to one
# worker: cheap ones, and test_study's two-run serial reference (about 30 s), so that the study's fault
# tests can run beside the smoke matrix instead of after it.
PER_WORKER = {"data_mirror", "real_mirror", "tmp_path_factory", "serial"}


# First: pytest-xdist's own hook turns the groups into node ids, so they must be marked before it runs.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tests that share an expensive module- or session-scoped fixture (the smoke study, a trained project)
    go to one pytest-xdist worker (`--dist loadgroup`, pytest.ini), so it is built once; the rest spread."""
    parent: dict = {}

    def find(k):
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    shared = {}
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        keys = [
            (d[-1].scope, item.module.__name__ if d[-1].scope == "module" else "", name)
            for name, d in (defs.name2fixturedefs.items() if defs else [])
            if d and d[-1].scope in ("module", "session") and name not in PER_WORKER
        ]
        shared[item] = keys
        for a, b in zip(keys, keys[1:]):
            parent[find(a)] = find(b)
    group = {item: "-".join(find(keys[0])[1:]).strip("-") for item, keys in shared.items() if keys}
    for item, name in group.items():
        item.add_marker(pytest.mark.xdist_group(name))
    # The largest groups first (the smoke study's is the longest job of the suite), so no worker starts
    # one when the others are nearly done.
    size = {name: list(group.values()).count(name) for name in set(group.values())}
    items.sort(key=lambda item: -size.get(group.get(item, ""), 0))
