import gzip
import hashlib
import http.server
import socket
import threading
from functools import partial

import pytest
import torch

from vae import data
from vae.data import DataError, decode_gz, encode_idx, fetch_file, parse_idx


def images(n=3):
    return torch.arange(n * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 28, 28)


def test_idx_round_trip_images_and_labels():
    x = images()
    assert torch.equal(parse_idx(encode_idx(x), "train-images", 3), x)
    y = torch.tensor([0, 9, 3], dtype=torch.uint8)
    assert torch.equal(parse_idx(encode_idx(y), "train-labels", 3), y)


def test_idx_header_is_big_endian_magic_then_dims():
    raw = encode_idx(images(2))
    assert raw[:4] == bytes([0, 0, 8, 3])
    assert int.from_bytes(raw[4:8], "big") == 2 and int.from_bytes(raw[8:12], "big") == 28


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r[:-1], "truncated"),
    (lambda r: r + b"\0", "trailing bytes"),
    (lambda r: r[:6], "truncated IDX header"),
    (lambda r: b"\0\0\x08\x01" + r[4:], "magic number"),
    (lambda r: b"\0\0\x0d\x03" + r[4:], "magic number"),
])
def test_idx_rejects_corrupt_images(mutate, message):
    with pytest.raises(DataError, match=message):
        parse_idx(mutate(encode_idx(images())), "t10k-images")


def test_idx_rejects_wrong_dims_count_and_labels():
    with pytest.raises(DataError, match="expected 28x28"):
        parse_idx(encode_idx(torch.zeros(2, 28, 27, dtype=torch.uint8)), "t10k-images")
    with pytest.raises(DataError, match="3 examples, expected 10000"):
        parse_idx(encode_idx(images()), "t10k-images", 10000)
    with pytest.raises(DataError, match="label 10 outside 0-9"):
        parse_idx(encode_idx(torch.tensor([1, 10], dtype=torch.uint8)), "t10k-labels")


def test_gzip_corruption_is_a_data_error():
    blob = gzip.compress(encode_idx(images()))
    with pytest.raises(DataError, match="not a valid gzip"):
        decode_gz(blob[: len(blob) // 2], "t10k-images")


def test_local_mirror_accepts_unofficial_md5_with_record(tmp_path):
    from tests.conftest import make_mirror
    make_mirror(tmp_path)
    blob, rec = fetch_file("test_labels", [f"file://{tmp_path}"])
    assert rec["source"] == "local mirror" and rec["official"] is False
    assert rec["md5"] == hashlib.md5(blob).hexdigest() != rec["official_md5"]


def test_real_mirror_files_are_official_except_rebuilt_train_images(real_mirror, tmp_path):
    manifest = data.download(tmp_path / "mnist", {"dataset": "mnist", "mirrors": [],
                                                  "local_mirror": str(real_mirror),
                                                  "retries": 1, "timeout_s": 1})
    official = {k: r["official"] for k, r in manifest["files"].items()}
    assert official == {"train_images": False, "train_labels": True, "test_images": True, "test_labels": True}
    assert len(manifest["warnings"]) == 1 and "train-images" in manifest["warnings"][0]
    x, y = data.load_split(tmp_path / "mnist", "train")
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    # The README's check on the rebuilt file: the well-known mean intensity.
    assert abs(x.float().mean().item() / 255 - 0.1307) < 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_mirror(tmp_path):
    """Serve tmp_path/www over HTTP on loopback; yields (dir, url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_unreachable_mirror_falls_through_to_next(real_mirror, http_mirror):
    root, url = http_mirror
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes((real_mirror / "t10k-labels-idx1-ubyte.gz").read_bytes())
    dead = f"http://127.0.0.1:{_free_port()}"
    blob, rec = fetch_file("test_labels", [dead, url], retries=2, timeout=2, backoff=0)
    assert rec["source"] == url and rec["official"]


def test_network_md5_mismatch_moves_on_and_error_names_file_and_mirrors(http_mirror):
    root, url = http_mirror
    from tests.conftest import make_mirror
    make_mirror(root)  # well-formed files whose md5 is not the official one
    with pytest.raises(DataError) as e:
        fetch_file("test_labels", [url, f"{url}/missing"], retries=2, backoff=0)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "md5" in msg and f"{url}/missing" in msg
    assert "VAE_MNIST_MIRROR" in msg  # no local mirror configured: say how to add one


def test_load_split_requires_a_complete_download(tmp_path):
    with pytest.raises(DataError, match="dvc repro download"):
        data.load_split(tmp_path, "test")
