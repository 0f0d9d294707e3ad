"""Fetching a data set's four files from mirrors into data/DATASET, verified, with a manifest.

Sources are tried in order: the configured mirror ($VAE_DATA_MIRROR or
data.local_mirror), then the data set's public mirrors. A mirror is a folder
or an http(s) URL laid out alike: ROOT/FOLDER/FILE, FOLDER being the data set's
`folder` (mnist/, fashion-mnist/). A folder is read once and may hold content
that matches no published md5 (with a warning, see vae/data.py); a URL is the
network, where only published content is accepted.

A network mirror that times out, drops the connection or answers 5xx is tried
again (data.retries tries, with backoff); a 4xx, or a body that is not gzip (an
HTML error page sent with status 200), moves on to the next source at once:
asking again would get the same answer.

data/DATASET holds the decompressed IDX files and a manifest of what they are (content
md5s, and a warning for content that is not the published one), never which .gz or
mirror they came from: that is printed. So the same content makes the same
data/DATASET (and DVC hash) on every machine, however its .gz was compressed.

Only the download stage imports this module; the stages that load data import
vae/data.py alone, so a change here never makes a trained model stale.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import requests

from vae.atomic import atomic_dir, write_bytes, write_json
from vae.data import DATASETS, MANIFEST, DataError, identify, parse_idx

# A folder or an http(s) URL holding one folder per data set (as ../shared/datasets does).
MIRROR_ENV = "VAE_DATA_MIRROR"
# The MNIST folder itself; kept working for setups made before Fashion-MNIST.
MNIST_MIRROR_ENV = "VAE_MNIST_MIRROR"


def _is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme.lower() in ("http", "https")


def _local_dir(source: str) -> Path:
    if source.startswith("file://"):
        source = urllib.request.url2pathname(urllib.parse.urlparse(source).path)
    return Path(os.path.expandvars(os.path.expanduser(source)))


def _place(root: str, folder: str = "") -> str:
    """ROOT/FOLDER, ROOT being an http(s) URL or a folder (`~`, $VARS and file:// understood)."""
    root = os.path.expandvars(root)
    if _is_url(root):
        # Not Path(): it would fold http://host into http:/host.
        return root.rstrip("/") + (f"/{folder}" if folder else "")
    if "://" in root and not root.startswith("file://"):
        raise DataError(f"mirror {root}: give a folder, a file:// URL or an http(s) URL")
    return str(_local_dir(root) / folder)


def local_mirror(dataset: str, data_params: dict) -> str | None:
    """Where the configured mirror keeps `dataset`: $VAE_DATA_MIRROR/FOLDER, else $VAE_MNIST_MIRROR
    (MNIST only), else data.local_mirror/FOLDER; a folder or an http(s) URL."""
    root = os.environ.get(MIRROR_ENV)
    if not root and dataset == "mnist" and os.environ.get(MNIST_MIRROR_ENV):
        return _place(os.environ[MNIST_MIRROR_ENV])
    root = root or data_params.get("local_mirror")
    return _place(root, DATASETS[dataset].folder) if root else None


def sources(data_params: dict) -> list[str]:
    """The configured mirror, if any, followed by the data set's public mirrors."""
    mine = local_mirror(data_params["dataset"], data_params)
    return ([mine] if mine else []) + list(DATASETS[data_params["dataset"]].mirrors)


def _fetch(source: str, filename: str, connect_timeout: float, read_timeout: float) -> bytes:
    if not _is_url(source):
        path = _local_dir(source) / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path.read_bytes()
    # Separate timeouts: a dead host fails in connect_timeout; a host that accepts
    # and then says nothing fails in read_timeout, not minutes later.
    r = requests.get(f"{source.rstrip('/')}/{filename}", timeout=(connect_timeout, read_timeout))
    r.raise_for_status()
    return r.content


def _not_gzip(blob: bytes) -> str | None:
    """Why `blob` is not a .gz file, or None. Judged by the gzip magic bytes first: a captive
    portal or a mirror's error page comes with status 200 and deserves one plain line."""
    if blob[:2] == b"\x1f\x8b":
        return None
    head = blob[:1024].lstrip().lower()
    if head.startswith(b"<!doctype html") or b"<html" in head:
        return "the mirror answered an HTML page, not a gzip file"
    return f"the mirror answered {len(blob)} bytes that are not a gzip file (they begin {blob[:8]!r})"


def gunzip(blob: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{name}: not a valid gzip file ({e})") from None


def _may_pass(e: Exception) -> bool:
    """A timeout, a dropped connection or a server error (5xx) may pass on a retry; a 4xx,
    a missing file or the wrong content will not."""
    if isinstance(e, requests.HTTPError):
        return e.response is not None and e.response.status_code >= 500
    return isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError))


def _say(msg: str) -> None:
    print(f"download: {msg}", flush=True)


def fetch_file(
    dataset: str,
    key: str,
    srcs: list[str],
    retries: int = 2,
    connect_timeout: float = 3.0,
    read_timeout: float = 5.0,
    backoff: float = 1.0,
) -> tuple[bytes, dict, str | None]:
    """The decompressed IDX bytes of the first valid copy of one file, its manifest record, and a warning
    or None. Prints each attempt, and where the file came from: the mirror and the .gz's md5."""
    f = DATASETS[dataset].files[key]
    tried = []
    for source in srcs:
        network = _is_url(source)
        tries = retries if network else 1
        for attempt in range(1, tries + 1):
            try:
                blob = _fetch(source, f.name, connect_timeout, read_timeout)
                if why := _not_gzip(blob):
                    raise DataError(why)
                raw = gunzip(blob, f.name)
                parse_idx(raw, f.name, f.examples)
                md5, warning = identify(raw, dataset, key, local=not network)
            except (OSError, requests.RequestException, DataError) as e:
                reason = str(e).splitlines()[0]
                _say(f"{f.name} from {source} (attempt {attempt}/{tries}): failed: {reason}")
                if attempt == tries or not _may_pass(e):
                    tried.append(f"{source} ({reason})")
                    break
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            gz_md5 = hashlib.md5(blob).hexdigest()
            which = "the published .gz" if gz_md5 == f.gz_md5 else f"not the published .gz {f.gz_md5}"
            _say(f"{f.name} from {source}: ok (.gz md5 {gz_md5}, {which}; content md5 {md5})")
            return (
                raw,
                {"file": f.idx_name, "examples": f.examples, "content_md5": md5, "published_content": warning is None},
                warning,
            )
    ds = DATASETS[dataset]
    mine = [s for s in srcs if s not in ds.mirrors]
    if mine:
        fix = f"give {mine[0]} a good {f.name}" + (", or let this machine reach a public mirror" if ds.mirrors else "")
    else:
        fix = (
            f"if this machine is offline, point ${MIRROR_ENV} (or params data.local_mirror) at a folder or an "
            f"http(s) URL holding a folder '{ds.folder}' with the four .gz files"
        )
    detail = "\n  ".join(tried) if tried else "(no sources configured)"
    raise DataError(f"could not fetch {f.name} from any source; tried:\n  {detail}\nFix: {fix}")


def download(out_dir: str | Path, data_params: dict, backoff: float = 1.0) -> dict:
    """Fetch and verify the four files and write them decompressed into out_dir, with a manifest; out_dir
    is replaced only when all four are good, so it is never left half-written."""
    dataset = data_params["dataset"]
    srcs = sources(data_params)
    manifest = {"dataset": dataset, "title": DATASETS[dataset].title, "files": {}, "warnings": []}
    with atomic_dir(out_dir) as tmp:
        for key in DATASETS[dataset].files:
            raw, record, warning = fetch_file(
                dataset,
                key,
                srcs,
                data_params["retries"],
                data_params["connect_timeout_s"],
                data_params["read_timeout_s"],
                backoff,
            )
            if warning:
                print(f"WARNING: {warning}")
                manifest["warnings"].append(warning)
            write_bytes(tmp / record["file"], raw)
            manifest["files"][key] = record
        write_json(tmp / MANIFEST, manifest)
    return manifest
