"""Loading: strict IDX parsing, and data/DATASET's layout. Fetching, gzip and identifying files is
tests/test_download.py."""

import gzip
import hashlib

import pytest
import torch

from tests.conftest import encode_idx
from vae import data
from vae.data import DataError, binarize, parse_idx, scored_test_images, to_float


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


def sha256_of_bits(x: torch.Tensor) -> str:
    return hashlib.sha256(x.to(torch.uint8).numpy().tobytes()).hexdigest()


def grey_ramp(n: int = 10_000) -> torch.Tensor:
    """Test-set-shaped images whose pixels run through every grey level: the same on every machine."""
    return (torch.arange(n * 784) % 256).float().div(255).view(n, 1, 28, 28)


def test_binarize_draws_each_pixel_as_bernoulli_of_its_grey_level():
    p = torch.tensor([0.0, 0.25, 0.5, 1.0]).repeat(20_000, 1)
    bits = binarize(p, torch.Generator().manual_seed(0))
    assert set(bits.unique().tolist()) == {0.0, 1.0} and bits.dtype == p.dtype
    # 20,000 draws per level: the standard error of a frequency is at most 0.0035.
    assert bits.mean(0).tolist() == pytest.approx([0.0, 0.25, 0.5, 1.0], abs=0.015)
    assert torch.equal(bits, binarize(p, torch.Generator().manual_seed(0)))  # the generator decides every bit


def test_the_fixed_test_binarization_is_the_same_bits_everywhere():
    # A binarized run's test figures (per epoch, evaluation, pictures) are all of this one draw. Its seed is a
    # constant, not a run's: were it ever to change, every binarized result would silently change with it.
    ramp = grey_ramp()
    bits = scored_test_images(ramp, "dynamic")
    assert sha256_of_bits(bits) == "dd5b44c97fbfd050ee8938fa50ea845c589882fbe10aee8aab484bac833cb4ab"
    assert torch.equal(bits, scored_test_images(ramp, "dynamic"))
    assert bits.mean().item() == pytest.approx(ramp.mean().item(), abs=0.002)
    assert scored_test_images(ramp, "none") is ramp  # grey-level runs are scored on the images as they are


def test_the_fixed_binarization_of_the_mnist_test_set_has_its_recorded_hash(real_mirror):
    raw = gzip.decompress((real_mirror / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    bits = scored_test_images(to_float(parse_idx(raw, "t10k-images", 10_000)), "dynamic")
    assert sha256_of_bits(bits) == "6f97ded152ec26a11ae712123d39285d065519a1bc50449b68545abe11c32e8c"
