"""Data sets in MNIST's IDX format: a registry, fetching from mirrors, strict parsing, tensors.

A data set is identified by content: the md5 of each decompressed IDX file is
checked against the published values of every known data set, so a file that
was recompressed but holds the same bytes (Debian's Fashion-MNIST) is the real
thing, and a file of another data set is refused by name. A file matching no
known content is accepted only from a local mirror, with a warning recorded in
the manifest (an offline mirror may hold a rebuilt file, see
../shared/datasets/README.md), never from the network.

Sources are tried in order: the local mirror, then the data set's public mirrors.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import time
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import requests
import torch

from vae.atomic import atomic_dir, write_bytes, write_json
from vae.errors import StageError

# A directory holding one folder per data set (as ../shared/datasets does).
MIRROR_ENV = "VAE_DATA_MIRROR"
# The MNIST folder itself; kept working for setups made before Fashion-MNIST.
MNIST_MIRROR_ENV = "VAE_MNIST_MIRROR"
MANIFEST = "manifest.json"
SPLITS = {"train": ("train_images", "train_labels"), "test": ("test_images", "test_labels")}


class DataError(StageError):
    """A file is missing, corrupt, of another data set, or could not be fetched from any source."""


@dataclass(frozen=True)
class DataFile:
    name: str      # as on every mirror
    gz_md5: str    # published md5 of the .gz
    idx_md5: str   # md5 of the decompressed IDX bytes: identifies the content whatever gzip wrapped it
    examples: int


@dataclass(frozen=True)
class Dataset:
    title: str                 # how reports name it
    folder: str                # its folder in a local mirror of several data sets
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...]
    files: dict[str, DataFile]  # train_images, train_labels, test_images, test_labels


def _idx_files(md5s: dict[str, tuple[str, str]]) -> dict[str, DataFile]:
    names = {"train_images": ("train-images-idx3-ubyte.gz", 60000), "train_labels": ("train-labels-idx1-ubyte.gz", 60000),
             "test_images": ("t10k-images-idx3-ubyte.gz", 10000), "test_labels": ("t10k-labels-idx1-ubyte.gz", 10000)}
    return {k: DataFile(names[k][0], gz, idx, names[k][1]) for k, (gz, idx) in md5s.items()}


# Keyed by the name used in params.yaml (data.dataset). .gz md5s as published and
# checked by torchvision; IDX md5s of the original decompressed files.
DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        title="MNIST", folder="mnist", class_names=tuple(str(d) for d in range(10)),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist", "https://storage.googleapis.com/cvdf-datasets/mnist",
                 "http://yann.lecun.com/exdb/mnist"),
        files=_idx_files({
            "train_images": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
            "train_labels": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
            "test_images": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
            "test_labels": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
        })),
    "fashion_mnist": Dataset(
        title="Fashion-MNIST", folder="fashion-mnist",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
        files=_idx_files({
            "train_images": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            "train_labels": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            "test_images": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            "test_labels": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        })),
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
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    if is_images and dims[1:] != (28, 28):
        raise DataError(f"{name}: images are {dims[1]}x{dims[2]}, expected 28x28")
    if expected_count is not None and dims[0] != expected_count:
        raise DataError(f"{name}: {dims[0]} examples, expected {expected_count}")
    body = raw[4 + 4 * ndim:]
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


def gunzip(blob: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{name}: not a valid gzip file ({e})") from None


def decode_gz(blob: bytes, name: str, expected_count: int | None = None) -> torch.Tensor:
    return parse_idx(gunzip(blob, name), name, expected_count)


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
        raise DataError(f"{expected.name}: this is {actual}, but data.dataset is {dataset}: point the mirror "
                        f"at {DATASETS[dataset].title}'s files, or set data.dataset to {other}")
    if not local:
        raise DataError(f"{expected.name}: content md5 {md5} is not the published {expected.idx_md5}")
    return md5, (f"{expected.name}: content md5 {md5} from the local mirror differs from the published "
                 f"{expected.idx_md5}; IDX structure verified, accepted")


# --- fetching -------------------------------------------------------------------

def _is_local(source: str) -> bool:
    return "://" not in source or source.startswith("file://")


def _local_dir(source: str) -> Path:
    if source.startswith("file://"):
        source = urllib.request.url2pathname(urllib.parse.urlparse(source).path)
    return Path(os.path.expandvars(os.path.expanduser(source)))


def local_mirror(dataset: str, data_params: dict) -> str | None:
    """The local folder of `dataset`: $VAE_DATA_MIRROR/FOLDER, else $VAE_MNIST_MIRROR (MNIST only),
    else data.local_mirror/FOLDER; `~` and $VARS are expanded."""
    root = os.environ.get(MIRROR_ENV)
    if not root and dataset == "mnist" and os.environ.get(MNIST_MIRROR_ENV):
        return os.environ[MNIST_MIRROR_ENV]
    root = root or data_params.get("local_mirror")
    return str(_local_dir(root) / DATASETS[dataset].folder) if root else None


def sources(data_params: dict) -> list[str]:
    """The local mirror, if any, followed by the data set's public mirrors."""
    local = local_mirror(data_params["dataset"], data_params)
    return ([local] if local else []) + list(DATASETS[data_params["dataset"]].mirrors)


def _fetch(source: str, filename: str, connect_timeout: float, read_timeout: float) -> bytes:
    if _is_local(source):
        path = _local_dir(source) / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path.read_bytes()
    # Separate timeouts: a dead host fails in connect_timeout; a host that accepts
    # and then says nothing fails in read_timeout, not minutes later.
    r = requests.get(source.rstrip("/") + "/" + filename, timeout=(connect_timeout, read_timeout))
    r.raise_for_status()
    return r.content


def _say(msg: str) -> None:
    print(f"download: {msg}", flush=True)


def fetch_file(dataset: str, key: str, srcs: list[str], retries: int = 2, connect_timeout: float = 3.0,
               read_timeout: float = 5.0, backoff: float = 1.0) -> tuple[bytes, dict, str | None]:
    """The first valid copy of one file, a record of where it came from, and a warning or None."""
    f = DATASETS[dataset].files[key]
    tried = []
    for source in srcs:
        local = _is_local(source)
        attempts = 1 if local else retries
        for attempt in range(attempts):
            where = "local mirror" if local else source
            try:
                blob = _fetch(source, f.name, connect_timeout, read_timeout)
                raw = gunzip(blob, f.name)
                parse_idx(raw, f.name, f.examples)
                md5, warning = identify(raw, dataset, key, local)
            except (OSError, requests.RequestException, DataError) as e:
                reason = str(e).splitlines()[0]
                _say(f"{f.name} from {where} (attempt {attempt + 1}/{attempts}): failed: {reason}")
                tried.append(f"{source} ({reason})")
                # A missing file, an HTTP error status or the wrong content will not change on retry.
                if isinstance(e, (FileNotFoundError, requests.HTTPError, DataError)):
                    break
                if attempt + 1 < attempts:
                    time.sleep(backoff * 2 ** attempt)
                continue
            _say(f"{f.name} from {where}: ok")
            # A local mirror's path differs between machines; keep it out of the
            # manifest so data/DATASET hashes the same wherever it was built.
            return blob, {"file": f.name, "source": where, "examples": f.examples, "content_md5": md5,
                          "published_content": warning is None, "sha256": hashlib.sha256(blob).hexdigest()}, warning
    detail = "\n  ".join(tried) if tried else "(no sources configured)"
    hint = ("" if any(_is_local(s) for s in srcs) else
            f"\nIf this machine is offline, point ${MIRROR_ENV} (or params data.local_mirror) at a directory "
            f"holding a folder '{DATASETS[dataset].folder}' with the four .gz files.")
    raise DataError(f"could not fetch {f.name} from any source; tried:\n  {detail}{hint}")


def download(out_dir: str | Path, data_params: dict, backoff: float = 1.0) -> dict:
    """Fetch and verify the four files into out_dir, with a manifest; out_dir is replaced only
    when all four are good, so it is never left half-written."""
    dataset = data_params["dataset"]
    srcs = sources(data_params)
    manifest = {"dataset": dataset, "title": DATASETS[dataset].title, "files": {}, "warnings": []}
    with atomic_dir(out_dir) as tmp:
        for key in DATASETS[dataset].files:
            blob, record, warning = fetch_file(dataset, key, srcs, data_params["retries"],
                                               data_params["connect_timeout_s"], data_params["read_timeout_s"],
                                               backoff)
            if warning:
                print(f"WARNING: {warning}")
                manifest["warnings"].append(warning)
            write_bytes(tmp / record["file"], blob)
            manifest["files"][key] = record
        write_json(tmp / MANIFEST, manifest)
    return manifest


# --- loading --------------------------------------------------------------------

def load_split(data_dir: str | Path, dataset: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 28, 28] and labels [N] of 'train' or 'test'."""
    data_dir = Path(data_dir)
    if not (data_dir / MANIFEST).exists():
        raise DataError(f"{data_dir} has no {MANIFEST}; run `dvc repro download` first")
    out = []
    for key in SPLITS[split]:
        f = DATASETS[dataset].files[key]
        out.append(decode_gz((data_dir / f.name).read_bytes(), f.name, f.examples))
    return out[0], out[1]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] in [0, 1], resident in memory."""
    return images.unsqueeze(1).float().div_(255.0)
