import gzip
import hashlib
import http.server
import os
import socket
import stat
import threading
import time
from functools import partial

import pytest
import torch

from vae import data
from vae.data import DATASETS, DataError, Dataset, DataFile, decode_gz, fetch_file, parse_idx
from tests.conftest import encode_idx, make_mirror


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


PARAMS = {"dataset": "mnist", "local_mirror": None, "retries": 1, "connect_timeout_s": 1, "read_timeout_s": 1}


def test_local_mirror_accepts_unknown_content_with_a_warning(tmp_path):
    make_mirror(tmp_path)
    blob, rec, warning = fetch_file("mnist", "test_labels", [f"file://{tmp_path}"])
    assert rec["source"] == "local mirror" and rec["published_content"] is False
    assert rec["content_md5"] == hashlib.md5(gzip.decompress(blob)).hexdigest()
    assert "differs from the published" in warning


@pytest.fixture
def kmnist_like(monkeypatch, tmp_path):
    """A third registered data set whose published content is a generated mirror's: what adding
    KMNIST takes is one more registry entry."""
    folder = make_mirror(tmp_path / "kmnist", seed=7)
    files = {k: DataFile(f.name, "0" * 32, hashlib.md5(gzip.decompress((folder / f.name).read_bytes())).hexdigest(),
                         f.examples) for k, f in DATASETS["mnist"].files.items()}
    entry = Dataset("KMNIST", "kmnist", tuple("o ki su tsu na ha ma ya re wo".split()), (), files)
    monkeypatch.setitem(data.DATASETS, "kmnist", entry)
    monkeypatch.setattr(data, "KNOWN_CONTENT", {**data.KNOWN_CONTENT,
                                                **{f.idx_md5: ("kmnist", k) for k, f in files.items()}})
    return tmp_path


def test_recompressed_identical_file_is_the_real_thing_without_warning(kmnist_like):
    f = DATASETS["kmnist"].files["test_images"]
    original = kmnist_like / "kmnist" / f.name
    other = kmnist_like / "recompressed"
    other.mkdir()
    (other / f.name).write_bytes(gzip.compress(gzip.decompress(original.read_bytes()), compresslevel=9))
    assert (other / f.name).read_bytes() != original.read_bytes()
    _, rec, warning = fetch_file("kmnist", "test_images", [str(other)])
    assert warning is None and rec["published_content"] is True


def test_a_file_of_another_data_set_is_refused_by_name(kmnist_like, capsys):
    with pytest.raises(DataError, match=r"this is KMNIST's t10k-labels-idx1-ubyte.gz .*but data.dataset is mnist"):
        fetch_file("mnist", "test_labels", [str(kmnist_like / "kmnist")])
    assert "attempt 1/1): failed: t10k-labels-idx1-ubyte.gz: this is KMNIST" in capsys.readouterr().out


def test_real_mnist_mirror_is_published_content_except_rebuilt_train_images(real_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(data.MIRROR_ENV, str(real_mirror))
    manifest = data.download(tmp_path / "mnist", PARAMS)
    published = {k: r["published_content"] for k, r in manifest["files"].items()}
    assert published == {"train_images": False, "train_labels": True, "test_images": True, "test_labels": True}
    assert len(manifest["warnings"]) == 1 and "train-images" in manifest["warnings"][0]
    x, y = data.load_split(tmp_path / "mnist", "mnist", "train")
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    # The README's check on the rebuilt file: the well-known mean intensity.
    assert abs(x.float().mean().item() / 255 - 0.1307) < 1e-3


def test_real_fashion_mirror_is_recognised_and_refused_as_mnist(real_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(data.MIRROR_ENV, str(real_mirror))
    manifest = data.download(tmp_path / "fashion", {**PARAMS, "dataset": "fashion_mnist"})
    assert manifest["warnings"] == [] and manifest["title"] == "Fashion-MNIST"
    assert all(r["published_content"] for r in manifest["files"].values())  # recompressed by Debian, same bytes
    # Fashion-MNIST's files where MNIST's are expected (the old $VAE_MNIST_MIRROR pitfall): refused by name.
    monkeypatch.delenv(data.MIRROR_ENV)
    monkeypatch.setenv(data.MNIST_MIRROR_ENV, str(real_mirror / "fashion-mnist"))
    with pytest.raises(DataError, match="this is Fashion-MNIST's train-images-idx3-ubyte.gz"):
        data.download(tmp_path / "mnist", PARAMS)
    assert not (tmp_path / "mnist").exists()


def test_mirror_settings_and_their_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    assert data.local_mirror("mnist", PARAMS) is None
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MIRRORS", str(tmp_path / "m"))
    assert data.local_mirror("fashion_mnist", {**PARAMS, "local_mirror": "~/m"}) == str(tmp_path / "m" / "fashion-mnist")
    assert data.local_mirror("mnist", {**PARAMS, "local_mirror": "$MIRRORS"}) == str(tmp_path / "m" / "mnist")
    monkeypatch.setenv(data.MNIST_MIRROR_ENV, "/legacy/mnist")
    assert data.local_mirror("mnist", {**PARAMS, "local_mirror": "~/m"}) == "/legacy/mnist"
    assert data.local_mirror("fashion_mnist", {**PARAMS, "local_mirror": "~/m"}) == str(tmp_path / "m" / "fashion-mnist")
    monkeypatch.setenv(data.MIRROR_ENV, "/all")
    assert data.local_mirror("mnist", PARAMS) == "/all/mnist"


def test_a_mirror_given_with_a_tilde_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    make_mirror(tmp_path / "datasets" / "mnist")
    manifest = data.download(tmp_path / "out", {**PARAMS, "local_mirror": "~/datasets"})
    assert manifest["files"]["test_labels"]["source"] == "local mirror"


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


@pytest.fixture
def silent_mirror():
    """A server that accepts connections and never answers: the hanging mirror."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_unreachable_mirror_falls_through_to_the_next(kmnist_like, http_mirror):
    root, url = http_mirror
    f = DATASETS["kmnist"].files["test_labels"]
    (root / f.name).write_bytes((kmnist_like / "kmnist" / f.name).read_bytes())
    dead = f"http://127.0.0.1:{_free_port()}"
    _, rec, warning = fetch_file("kmnist", "test_labels", [dead, url], retries=2, connect_timeout=2,
                                 read_timeout=2, backoff=0)
    assert rec["source"] == url and rec["published_content"] and warning is None


def test_unknown_content_from_the_network_is_refused_and_the_error_names_file_and_mirrors(http_mirror):
    root, url = http_mirror
    make_mirror(root)  # well-formed files whose content is not MNIST's
    with pytest.raises(DataError) as e:
        fetch_file("mnist", "test_labels", [url, f"{url}/missing"], retries=2, backoff=0)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "not the published" in msg and f"{url}/missing" in msg
    assert data.MIRROR_ENV in msg  # no local mirror configured: say how to add one


def test_a_hanging_mirror_fails_after_the_read_timeout_and_each_attempt_is_printed(silent_mirror, capsys):
    t0 = time.monotonic()
    with pytest.raises(DataError, match="could not fetch"):
        fetch_file("mnist", "test_labels", [silent_mirror], retries=2, connect_timeout=1, read_timeout=0.5,
                   backoff=0)
    elapsed = time.monotonic() - t0
    out = capsys.readouterr().out
    assert "(attempt 1/2): failed" in out and "(attempt 2/2): failed" in out and "timed out" in out.lower()
    assert elapsed < 10  # two 0.5 s read timeouts; before the fix this was 2 x 30 s


def test_default_timeouts_give_up_on_unreachable_mirrors_within_30_seconds():
    from vae.config import load_params
    d = load_params()["data"]
    for name, ds in DATASETS.items():
        # Each try waits at most the connect timeout (nothing answers), plus the backoff between tries.
        worst = len(ds.mirrors) * (d["retries"] * d["connect_timeout_s"] + sum(2 ** a for a in range(d["retries"] - 1)))
        assert worst < 30, name


def test_a_failed_download_leaves_the_previous_data_untouched(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    root = tmp_path / "root"
    make_mirror(root / "mnist")
    out = tmp_path / "data" / "mnist"
    data.download(out, {**PARAMS, "local_mirror": str(root)}, backoff=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # Then a mirror whose 4th file is corrupt: the download fails and nothing of it is left.
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a valid gzip"):
        data.download(out, {**PARAMS, "local_mirror": str(root)}, backoff=0)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["mnist"]  # no temp directory left behind


def test_a_failed_first_download_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    root = tmp_path / "root"
    make_mirror(root / "mnist")
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # the 4th file
    with pytest.raises(DataError, match="t10k-labels"):
        data.download(tmp_path / "data" / "mnist", {**PARAMS, "local_mirror": str(root)}, backoff=0)
    assert list((tmp_path / "data").iterdir()) == []


def test_written_files_honour_the_umask(tmp_path, monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    make_mirror(tmp_path / "root" / "mnist")
    old = os.umask(0o022)
    try:
        data.download(tmp_path / "out", {**PARAMS, "local_mirror": str(tmp_path / "root")}, backoff=0)
        os.umask(0o027)
        from vae.atomic import write_text
        write_text(tmp_path / "group.txt", "x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "group.txt").stat().st_mode) == 0o640


def test_load_split_requires_a_complete_download(tmp_path):
    with pytest.raises(DataError, match="dvc repro download"):
        data.load_split(tmp_path, "mnist", "test")
