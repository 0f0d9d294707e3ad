"""MNIST: fetch the IDX files from mirrors, parse them strictly, hold them as tensors.

Sources are tried in order: the local mirror (a directory or file:// URL, from
$VAE_MNIST_MIRROR or params `data.local_mirror`), then the public mirrors.
Structure is always checked. Official md5 sums are enforced for files fetched
over the network; a local mirror whose file differs from the official sum is
accepted with a warning that is printed and recorded in the manifest (an
offline mirror may hold a rebuilt file, see ../shared/datasets/README.md).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import torch

from vae import io

MIRROR_ENV = "VAE_MNIST_MIRROR"

# name -> (file, official md5, examples); md5s as published and checked by torchvision.
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 60000),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 60000),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 10000),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 10000),
}
MANIFEST = "manifest.json"


class DataError(RuntimeError):
    """A file is missing, corrupt or could not be fetched from any source."""


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


def encode_idx(t: torch.Tensor) -> bytes:
    """The inverse of parse_idx, for building test mirrors."""
    t = t.to(torch.uint8).contiguous()
    header = struct.pack(">I", 0x800 | t.dim()) + struct.pack(f">{t.dim()}I", *t.shape)
    return header + t.numpy().tobytes()


def decode_gz(blob: bytes, name: str, expected_count: int | None = None) -> torch.Tensor:
    try:
        raw = gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{name}: not a valid gzip file ({e})") from e
    return parse_idx(raw, name, expected_count)


# --- fetching -------------------------------------------------------------------

def _is_local(source: str) -> bool:
    return "://" not in source or source.startswith("file://")


def _local_dir(source: str) -> Path:
    if source.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(source).path))
    return Path(source)


def sources(data_params: dict) -> list[str]:
    """The local mirror (env var first, then params) followed by the public mirrors."""
    local = os.environ.get(MIRROR_ENV) or data_params.get("local_mirror")
    return ([local] if local else []) + list(data_params["mirrors"])


def _fetch(source: str, filename: str, timeout: float) -> bytes:
    if _is_local(source):
        path = _local_dir(source) / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path.read_bytes()
    url = source.rstrip("/") + "/" + filename
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def fetch_file(key: str, srcs: list[str], retries: int = 3, timeout: float = 30.0,
               backoff: float = 1.0) -> tuple[bytes, dict]:
    """Return the first valid copy of one MNIST file and a record of where it came from."""
    filename, md5, count = FILES[key]
    tried = []
    for source in srcs:
        local = _is_local(source)
        for attempt in range(1 if local else retries):
            try:
                blob = _fetch(source, filename, timeout)
                decode_gz(blob, filename, count)
                got = hashlib.md5(blob).hexdigest()
                if got != md5 and not local:
                    raise DataError(f"{filename}: md5 {got}, expected the official {md5}")
            except (OSError, urllib.error.URLError, DataError) as e:
                tried.append(f"{source} ({e})")
                # A missing file or a 404 will not change on retry.
                if isinstance(e, (FileNotFoundError, urllib.error.HTTPError)):
                    break
                if attempt + 1 < retries and not local:
                    time.sleep(backoff * 2 ** attempt)
                continue
            # A local mirror's path differs between machines; keep it out of the
            # manifest so data/mnist hashes the same wherever it was built.
            record = {"file": filename, "source": "local mirror" if local else source,
                      "examples": count, "md5": got,
                      "sha256": hashlib.sha256(blob).hexdigest(), "official_md5": md5,
                      "official": got == md5}
            return blob, record
    detail = "\n  ".join(tried) if tried else "(no sources configured)"
    hint = ("" if any(_is_local(s) for s in srcs) else
            f"\nIf this machine is offline, point ${MIRROR_ENV} (or params data.local_mirror) "
            "at a directory or file:// URL holding the four MNIST .gz files.")
    raise DataError(f"could not fetch {filename} from any source; tried:\n  {detail}{hint}")


def download(out_dir: str | Path, data_params: dict, backoff: float = 1.0) -> dict:
    """Fetch, verify and write the four files plus a manifest into out_dir."""
    out_dir = Path(out_dir)
    srcs = sources(data_params)
    manifest = {"dataset": data_params["dataset"], "files": {}, "warnings": []}
    for key in FILES:
        blob, record = fetch_file(key, srcs, data_params["retries"], data_params["timeout_s"], backoff)
        if not record["official"]:
            msg = (f"{record['file']}: md5 {record['md5']} from the local mirror "
                   f"differs from the official {record['official_md5']}; structure verified, accepted")
            print(f"WARNING: {msg}")
            manifest["warnings"].append(msg)
        io.write_bytes(out_dir / record["file"], blob)
        manifest["files"][key] = record
    io.write_json(out_dir / MANIFEST, manifest)  # last: its presence means the set is complete
    return manifest


# --- loading --------------------------------------------------------------------

def load_split(data_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 28, 28] and labels [N] of 'train' or 'test'."""
    data_dir = Path(data_dir)
    if not (data_dir / MANIFEST).exists():
        raise DataError(f"{data_dir} has no {MANIFEST}; run `dvc repro download` first")
    out = []
    for part in ("images", "labels"):
        filename, _, count = FILES[f"{split}_{part}"]
        out.append(decode_gz((data_dir / filename).read_bytes(), filename, count))
    return out[0], out[1]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] in [0, 1], resident in memory."""
    return images.unsqueeze(1).float().div_(255.0)
