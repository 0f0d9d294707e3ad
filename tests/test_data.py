"""Loading: strict IDX parsing, and data/DATASET's layout. Fetching, gzip and identifying files is
tests/test_download.py."""

import gzip

import pytest
import torch

from tests.conftest import encode_idx
from vae import data
from vae.data import DataError, parse_idx


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


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r[:-1], "truncated"),
        (lambda r: r + b"\0", "trailing bytes"),
        (lambda r: r[:6], "truncated IDX header"),
        (lambda r: b"\0\0\x08\x01" + r[4:], "magic number"),
        (lambda r: b"\0\0\x0d\x03" + r[4:], "magic number"),
    ],
)
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


def test_load_split_requires_a_complete_download(tmp_path):
    with pytest.raises(DataError, match=r"manifest.json is missing; run `dvc repro download` first"):
        data.load_split(tmp_path, "mnist", "test")
    # data/DATASET as downloads before content identification left it: .gz files, which are read no more.
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(encode_idx(images())))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is missing; run `dvc repro download` first"):
        data.load_split(tmp_path, "mnist", "test")
