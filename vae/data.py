"""Data sets in MNIST's IDX format: a registry, identification by content, strict parsing, tensors.

A data set is identified by content: the md5 of each decompressed IDX file is
checked against the published values of every known data set, so a file that
was recompressed but holds the same bytes (Debian's Fashion-MNIST) is the real
thing, and a file of another data set is refused by name. A file matching no
known content is accepted only from a local folder mirror, with a warning
recorded in the manifest (an offline mirror may hold a rebuilt file, see
../shared/datasets/README.md), never from the network.

data/DATASET holds the decompressed IDX files and a manifest of their content md5s:
what determines results, and nothing else. The .gz bytes (which depend on the
compressor that made them) and where they came from are printed by the download,
never stored, so the same content has the same DVC hash on every machine.

Fetching lives in vae/download.py, which only the download stage imports: the
stages that load data import this module alone, so a change to how files are
fetched never makes a trained model stale.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from vae.errors import StageError

MANIFEST = "manifest.json"
SPLITS = {"train": ("train_images", "train_labels"), "test": ("test_images", "test_labels")}


class DataError(StageError):
    """A file is missing, corrupt, of another data set, or could not be fetched from any source."""


@dataclass(frozen=True)
class DataFile:
    name: str  # the .gz, as on every mirror
    gz_md5: str  # published md5 of the .gz
    idx_md5: str  # md5 of the decompressed IDX bytes: identifies the content whatever gzip wrapped it
    examples: int

    @property
    def idx_name(self) -> str:
        """The decompressed file, as data/DATASET holds it."""
        return self.name.removesuffix(".gz")


@dataclass(frozen=True)
class Dataset:
    title: str  # how reports name it
    folder: str  # its folder in a mirror of several data sets (local or http)
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...]
    files: dict[str, DataFile]  # train_images, train_labels, test_images, test_labels


def _idx_files(md5s: dict[str, tuple[str, str]]) -> dict[str, DataFile]:
    names = {
        "train_images": ("train-images-idx3-ubyte.gz", 60000),
        "train_labels": ("train-labels-idx1-ubyte.gz", 60000),
        "test_images": ("t10k-images-idx3-ubyte.gz", 10000),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", 10000),
    }
    return {k: DataFile(names[k][0], gz, idx, names[k][1]) for k, (gz, idx) in md5s.items()}


# Keyed by the name used in params.yaml (data.dataset). .gz md5s as published and
# checked by torchvision; IDX md5s of the original decompressed files.
DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        title="MNIST",
        folder="mnist",
        class_names=tuple(str(d) for d in range(10)),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist",
            "https://storage.googleapis.com/cvdf-datasets/mnist",
            "http://yann.lecun.com/exdb/mnist",
        ),
        files=_idx_files(
            {
                "train_images": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
                "train_labels": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
                "test_images": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
                "test_labels": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
            }
        ),
    ),
    "fashion_mnist": Dataset(
        title="Fashion-MNIST",
        folder="fashion-mnist",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
        files=_idx_files(
            {
                "train_images": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
                "train_labels": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
                "test_images": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
                "test_labels": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
            }
        ),
    ),
}
KNOWN_CONTENT = {f.idx_md5: (name, key) for name, ds in DATASETS.items() for key, f in ds.files.items()}


# --- IDX format ---------------------------------------------------------------


def parse_idx(raw: bytes, name: str, expected_count: int | None = None) -> torch.Tensor:
    """Decode an uncompressed IDX file of unsigned bytes: 28x28 images or labels 0-9."""
    is_images = "images" in name
    ndim = 3 if is_images else 1
    magic = 0x800 | ndim  # 0x08 = unsigned byte, then the number of dimensions
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{name}: truncated IDX header ({len(raw)} bytes)")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"{name}: IDX magic number {got:#010x}, expected {magic:#010x}")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    if is_images and dims[1:] != (28, 28):
        raise DataError(f"{name}: images are {dims[1]}x{dims[2]}, expected 28x28")
    if expected_count is not None and dims[0] != expected_count:
        raise DataError(f"{name}: {dims[0]} examples, expected {expected_count}")
    body = raw[4 + 4 * ndim :]
    size = 1
    for d in dims:
        size *= d
    if len(body) != size:
        what = "truncated" if len(body) < size else "has trailing bytes"
        raise DataError(f"{name}: {what}: {len(body)} data bytes for dims {dims} ({size} expected)")
    t = torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*dims)
    if not is_images and dims[0] and int(t.max()) > 9:
        raise DataError(f"{name}: label {int(t.max())} outside 0-9")
    return t


def identify(raw: bytes, dataset: str, key: str, local: bool) -> tuple[str, str | None]:
    """(content md5, warning or None) of a decompressed file meant to be `dataset`'s `key`;
    raises DataError for another data set's file, or unknown content from the network."""
    md5 = hashlib.md5(raw).hexdigest()
    expected = DATASETS[dataset].files[key]
    if md5 == expected.idx_md5:
        return md5, None
    if md5 in KNOWN_CONTENT:
        other, other_key = KNOWN_CONTENT[md5]
        actual = f"{DATASETS[other].title}'s {DATASETS[other].files[other_key].name} (content md5 {md5})"
        if other == dataset:
            raise DataError(f"{expected.name}: this is {actual}: the mirror's files are swapped; fix their names")
        raise DataError(
            f"{expected.name}: this is {actual}, but data.dataset is {dataset}: point the mirror "
            f"at {DATASETS[dataset].title}'s files, or set data.dataset to {other}"
        )
    if not local:
        raise DataError(f"{expected.name}: content md5 {md5} is not the published {expected.idx_md5}")
    return md5, (
        f"{expected.name}: content md5 {md5} from the local mirror differs from the published "
        f"{expected.idx_md5}; IDX structure verified, accepted"
    )


# --- loading --------------------------------------------------------------------


def load_split(data_dir: str | Path, dataset: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 28, 28] and labels [N] of 'train' or 'test', from data/DATASET's IDX files."""
    data_dir = Path(data_dir)
    files = [DATASETS[dataset].files[key] for key in SPLITS[split]]
    for name in (MANIFEST, *(f.idx_name for f in files)):  # (a folder of the older layout holds .gz files)
        if not (data_dir / name).exists():
            raise DataError(f"{data_dir / name} is missing; run `dvc repro download` first")
    images, labels = (parse_idx((data_dir / f.idx_name).read_bytes(), f.idx_name, f.examples) for f in files)
    return images, labels


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] in [0, 1], resident in memory."""
    return images.unsqueeze(1).float().div_(255.0)


# --- binarized MNIST (train.binarize: dynamic) ----------------------------------------
# The literature scores likelihoods on binarized images: each pixel a Bernoulli draw with its grey level as
# probability, training images re-drawn whenever used, and one fixed binarization of the test set (Burda et
# al. 2016). On 0/1 targets the Bernoulli term is a true log-likelihood, so the IW bound bounds a true NLL.
# The test set's draw comes from this constant seed, never a run's: every binarized run, on every machine,
# is scored on the same bits (tests/test_data.py checks their sha256 on MNIST).
TEST_BINARIZATION_SEED = 20160


def binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each pixel 1 with probability its grey level, else 0. The uniforms are drawn on the CPU from `generator`
    (a CPU generator cannot fill a GPU tensor), so the bits are the same on every device."""
    return (torch.rand(x.shape, generator=generator).to(x.device) < x).to(x.dtype)


def scored_test_images(x: torch.Tensor, binarize_mode: str) -> torch.Tensor:
    """The test images a run is scored on: its grey levels, or for a binarized run the one fixed binarization."""
    if binarize_mode == "dynamic":
        return binarize(x, torch.Generator().manual_seed(TEST_BINARIZATION_SEED))
    return x
