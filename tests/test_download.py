"""Fetching: mirrors (folders and http URLs), retries, content checks, atomic and machine-independent output.

The HTTP tests run real servers on 127.0.0.1 and never reach the internet: the
`tiny` data set they fetch has no public mirrors."""

import collections
import dataclasses
import gzip
import hashlib
import http.server
import os
import socket
import stat
import threading
import time
import urllib.parse

import pytest
import torch

from tests.conftest import make_mirror
from vae import data
from vae import download as dl
from vae.data import DATASETS, MANIFEST, DataError, DataFile, Dataset
from vae.download import download, fetch_file

PARAMS = {"dataset": "mnist", "local_mirror": None, "retries": 1, "connect_timeout_s": 1, "read_timeout_s": 1}
HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head><body>Wi-Fi</body></html>\n"


@pytest.fixture(autouse=True)
def _no_mirror_env(monkeypatch):
    # CI sets $VAE_DATA_MIRROR, which takes precedence over the mirrors these tests set up.
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)


def _register(monkeypatch, name: str, entry: Dataset) -> None:
    monkeypatch.setitem(DATASETS, name, entry)
    monkeypatch.setattr(
        data, "KNOWN_CONTENT", {**data.KNOWN_CONTENT, **{f.idx_md5: (name, k) for k, f in entry.files.items()}}
    )


def _content_md5(path) -> str:
    return hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A registered data set of 20 training and 10 test images whose published content is a generated
    mirror's, and which has no public mirrors. Returns the mirror's root (ROOT/tiny/FILE)."""
    counts = {"train_images": 20, "train_labels": 20, "test_images": 10, "test_labels": 10}
    files = {k: DataFile(f.name, "0" * 32, "", counts[k]) for k, f in DATASETS["mnist"].files.items()}
    _register(monkeypatch, "tiny", Dataset("Tiny", "tiny", tuple("0123456789"), (), files))
    folder = make_mirror(tmp_path / "mirror" / "tiny", dataset="tiny")
    files = {k: dataclasses.replace(f, idx_md5=_content_md5(folder / f.name)) for k, f in files.items()}
    _register(monkeypatch, "tiny", Dataset("Tiny", "tiny", tuple("0123456789"), (), files))
    return tmp_path / "mirror"


def tiny_params(mirror, **kw):
    return {**PARAMS, "dataset": "tiny", "local_mirror": mirror, "retries": 3, **kw}


@pytest.fixture
def serve():
    """serve(answer) starts an HTTP server on loopback where answer(path) -> (status, body) decides
    each reply; returns (url, hits), hits counting the requests per path. All are stopped after the test."""
    servers = []

    def start(answer):
        hits = collections.Counter()

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # a client that stalls cannot hold a server thread past the test

            def do_GET(self):
                hits[self.path] += 1
                status, body = answer(self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", hits

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def folder(root):
    """An answer serving the files under root, 404 for anything else."""

    def answer(path):
        f = root / urllib.parse.unquote(path).lstrip("/")
        return (200, f.read_bytes()) if f.is_file() else (404, b"Not Found")

    return answer


@pytest.fixture
def silent_mirror():
    """A server that accepts connections and never answers: the hanging mirror."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(out):
    """Everything in out's parent: a failed download must leave it exactly so, temp directories included."""
    return {str(p.relative_to(out.parent)): p.read_bytes() if p.is_file() else None for p in out.parent.rglob("*")}


# --- mirrors: folders and URLs ---------------------------------------------------


def test_mirror_settings_and_their_precedence(tmp_path, monkeypatch):
    assert dl.local_mirror("mnist", PARAMS) is None
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MIRRORS", str(tmp_path / "m"))
    assert dl.local_mirror("fashion_mnist", {**PARAMS, "local_mirror": "~/m"}) == str(tmp_path / "m" / "fashion-mnist")
    assert dl.local_mirror("mnist", {**PARAMS, "local_mirror": "$MIRRORS"}) == str(tmp_path / "m" / "mnist")
    assert dl.local_mirror("mnist", {**PARAMS, "local_mirror": f"file://{tmp_path}/m"}) == str(tmp_path / "m" / "mnist")
    monkeypatch.setenv(dl.MNIST_MIRROR_ENV, "/legacy/mnist")
    assert dl.local_mirror("mnist", {**PARAMS, "local_mirror": "~/m"}) == "/legacy/mnist"
    assert dl.local_mirror("fashion_mnist", {**PARAMS, "local_mirror": "~/m"}) == str(tmp_path / "m" / "fashion-mnist")
    monkeypatch.setenv(dl.MIRROR_ENV, "/all")
    assert dl.local_mirror("mnist", PARAMS) == "/all/mnist"


def test_a_mirror_url_keeps_its_scheme_and_host(monkeypatch):
    # Path() would fold http://host into http:/host, a folder that does not exist.
    assert (
        dl.local_mirror("fashion_mnist", {**PARAMS, "local_mirror": "http://127.0.0.1:8501/"})
        == "http://127.0.0.1:8501/fashion-mnist"
    )
    monkeypatch.setenv(dl.MIRROR_ENV, "https://mirror.example/datasets")
    assert dl.local_mirror("mnist", PARAMS) == "https://mirror.example/datasets/mnist"
    monkeypatch.setenv(dl.MIRROR_ENV, "ftp://mirror.example/datasets")
    with pytest.raises(DataError, match="give a folder, a file:// URL or an http"):
        dl.local_mirror("mnist", PARAMS)


def test_a_mirror_given_with_a_tilde_is_read(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    download(tmp_path / "out", tiny_params("~/mirror"))
    assert f"t10k-labels-idx1-ubyte.gz from {tiny / 'tiny'}: ok" in capsys.readouterr().out


def test_an_http_mirror_in_local_mirror_is_used_like_a_folder(tiny, serve, tmp_path, capsys):
    url, hits = serve(folder(tiny))
    manifest = download(tmp_path / "out", tiny_params(url), backoff=0)
    assert all(r["published_content"] for r in manifest["files"].values()) and manifest["warnings"] == []
    names = [f.name for f in DATASETS["tiny"].files.values()]
    assert hits == {f"/tiny/{name}": 1 for name in names}
    out = capsys.readouterr().out
    assert all(f"download: {name} from {url}/tiny: ok" in out for name in names)
    assert data.load_split(tmp_path / "out", "tiny", "test")[0].shape == (10, 28, 28)


def test_an_http_mirror_is_the_network_and_must_serve_published_content(tiny, serve, tmp_path):
    f = DATASETS["tiny"].files["test_labels"]
    make_mirror(tmp_path / "other" / "tiny", seed=1, dataset="tiny")  # well-formed, not the published content
    url, _ = serve(folder(tmp_path / "other"))
    with pytest.raises(DataError, match=f"{f.name}: content md5 .* is not the published"):
        fetch_file("tiny", "test_labels", [f"{url}/tiny"], backoff=0)
    # The same file from a folder is accepted, with a warning.
    _, rec, warning = fetch_file("tiny", "test_labels", [str(tmp_path / "other" / "tiny")])
    assert rec["published_content"] is False and "differs from the published" in warning


def test_same_content_compressed_otherwise_makes_a_byte_identical_data_folder(tiny, tmp_path, capsys):
    # Debian's Fashion-MNIST holds the published content in other .gz bytes: data/DATASET, and so its DVC
    # hash and every stage after it, must not tell the two apart. Here: level 9 instead of 1, another mtime.
    other = tmp_path / "recompressed" / "tiny"
    other.mkdir(parents=True)
    for f in DATASETS["tiny"].files.values():
        original = (tiny / "tiny" / f.name).read_bytes()
        (other / f.name).write_bytes(gzip.compress(gzip.decompress(original), compresslevel=9, mtime=12345))
        assert (other / f.name).read_bytes() != original
    download(tmp_path / "a", tiny_params(str(tiny)), backoff=0)
    download(tmp_path / "b", tiny_params(str(other.parent)), backoff=0)
    a, b = ({p.name: p.read_bytes() for p in (tmp_path / d).iterdir()} for d in ("a", "b"))
    assert a == b and sorted(a) == [
        MANIFEST,
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    # Where each came from is printed: the mirror and the .gz's md5.
    f = DATASETS["tiny"].files["test_labels"]
    gz_md5 = hashlib.md5((other / f.name).read_bytes()).hexdigest()
    assert (
        f"download: {f.name} from {other}: ok (.gz md5 {gz_md5}, not the published .gz {f.gz_md5}; content md5 "
        f"{f.idx_md5})" in capsys.readouterr().out
    )
    # The data loaded are the .gz files' content, as decoded before they were stored decompressed.
    for split in ("train", "test"):
        for t, key in zip(data.load_split(tmp_path / "a", "tiny", split), data.SPLITS[split]):
            name = DATASETS["tiny"].files[key].name
            assert torch.equal(t, data.parse_idx(gzip.decompress((tiny / "tiny" / name).read_bytes()), name))


def test_the_manifest_is_the_same_whichever_mirror_served_the_files(tiny, serve, tmp_path, monkeypatch):
    # data/DATASET's DVC hash (and so DVC's run-cache key of every stage after it) must not
    # depend on the machine: one with an offline folder, one online that uses the public mirror.
    download(tmp_path / "from_folder", tiny_params(str(tiny)), backoff=0)
    url, _ = serve(folder(tiny))
    monkeypatch.setitem(DATASETS, "tiny", dataclasses.replace(DATASETS["tiny"], mirrors=(f"{url}/tiny",)))
    download(tmp_path / "from_url", tiny_params(None), backoff=0)
    a, b = ({p.name: p.read_bytes() for p in (tmp_path / d).iterdir()} for d in ("from_folder", "from_url"))
    assert a[MANIFEST] == b[MANIFEST] and a == b
    assert str(tmp_path) not in a[MANIFEST].decode() and "127.0.0.1" not in a[MANIFEST].decode()


# --- what a bad mirror costs -------------------------------------------------------

BAD_ANSWERS = {  # answer, tries it costs with data.retries = 3, what the one line per try says
    "an HTML page with 200": (lambda path: (200, HTML), 1, "the mirror answered an HTML page, not a gzip file"),
    "other bytes with 200": (lambda path: (200, b"\0" * 64), 1, "the mirror answered 64 bytes that are not a gzip"),
    "404": (lambda path: (404, b"Not Found"), 1, "404 Client Error"),
    "500": (lambda path: (500, b"Internal Server Error"), 3, "500 Server Error"),
}


@pytest.mark.parametrize("bad", BAD_ANSWERS)
def test_a_bad_answer_costs_one_try_or_the_retries_then_the_next_mirror_is_used(bad, tiny, serve, capsys):
    answer, tries, says = BAD_ANSWERS[bad]
    url, hits = serve(answer)
    good, good_hits = serve(folder(tiny))
    f = DATASETS["tiny"].files["test_labels"]
    _, rec, warning = fetch_file("tiny", "test_labels", [f"{url}/tiny", f"{good}/tiny"], retries=3, backoff=0)
    assert rec["published_content"] and warning is None
    assert hits == {f"/tiny/{f.name}": tries} and good_hits == {f"/tiny/{f.name}": 1}
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if f"from {url}/tiny" in line]
    assert len(failed) == tries and all(
        f"download: {f.name} from {url}/tiny (attempt" in line and says in line for line in failed
    )
    assert any(line.startswith(f"download: {f.name} from {good}/tiny: ok (") for line in lines)


@pytest.fixture
def earlier(tiny, tmp_path):
    """data/tiny as an earlier good download left it."""
    out = tmp_path / "data" / "tiny"
    download(out, tiny_params(str(tiny)), backoff=0)
    return out


@pytest.mark.parametrize("bad", BAD_ANSWERS)
def test_a_download_that_fails_leaves_the_data_as_they_were(bad, earlier, serve):
    answer, tries, says = BAD_ANSWERS[bad]
    url, hits = serve(answer)
    before = snapshot(earlier)
    with pytest.raises(DataError) as e:
        download(earlier, tiny_params(url), backoff=0)
    assert sum(hits.values()) == tries  # the first file failed: the download stopped there
    msg = str(e.value)  # one message: the file, every source tried and why, the fix
    assert msg.startswith("could not fetch train-images-idx3-ubyte.gz from any source; tried:")
    assert f"\n  {url}/tiny ({says}" in msg and f"\nFix: give {url}/tiny a good train-images" in msg
    assert snapshot(earlier) == before


def test_a_hanging_mirror_fails_after_the_read_timeout_and_leaves_the_data_as_they_were(earlier, silent_mirror, capsys):
    before = snapshot(earlier)
    t0 = time.monotonic()
    with pytest.raises(DataError, match="could not fetch"):
        download(earlier, tiny_params(silent_mirror, retries=2, read_timeout_s=0.3), backoff=0)
    elapsed = time.monotonic() - t0
    out = capsys.readouterr().out
    assert "(attempt 1/2): failed" in out and "(attempt 2/2): failed" in out and "timed out" in out.lower()
    assert elapsed < 10  # two 0.3 s read timeouts; before they were set, 2 x 30 s
    assert snapshot(earlier) == before


def test_a_hanging_public_mirror_fails_after_the_read_timeout(silent_mirror, capsys):
    t0 = time.monotonic()
    with pytest.raises(DataError, match="could not fetch"):
        fetch_file("mnist", "test_labels", [silent_mirror], retries=2, connect_timeout=1, read_timeout=0.5, backoff=0)
    out = capsys.readouterr().out
    assert "(attempt 1/2): failed" in out and "(attempt 2/2): failed" in out and "timed out" in out.lower()
    assert time.monotonic() - t0 < 10


def test_unreachable_mirror_falls_through_to_the_next(tiny, serve, capsys):
    url, _ = serve(folder(tiny))
    dead = f"http://127.0.0.1:{_free_port()}"
    _, rec, warning = fetch_file(
        "tiny", "test_labels", [dead, f"{url}/tiny"], retries=2, connect_timeout=2, read_timeout=2, backoff=0
    )
    assert rec["published_content"] and warning is None
    out = capsys.readouterr().out
    assert f"from {dead} (attempt 2/2): failed" in out and f"t10k-labels-idx1-ubyte.gz from {url}/tiny: ok" in out


def test_unknown_content_from_the_network_is_refused_and_the_error_names_file_and_mirrors(serve, tmp_path, monkeypatch):
    make_mirror(tmp_path / "www")  # well-formed files whose content is not MNIST's
    url, _ = serve(folder(tmp_path / "www"))
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=(url, f"{url}/missing")))
    with pytest.raises(DataError) as e:
        fetch_file("mnist", "test_labels", dl.sources(PARAMS), retries=2, backoff=0)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "not the published" in msg and f"{url}/missing" in msg
    assert dl.MIRROR_ENV in msg  # no mirror of our own configured: say how to add one


def test_default_timeouts_give_up_on_unreachable_mirrors_within_30_seconds():
    from vae.config import load_params

    d = load_params()["data"]
    for name, ds in DATASETS.items():
        # Each try waits at most the connect timeout (nothing answers), plus the backoff between tries.
        worst = len(ds.mirrors) * (d["retries"] * d["connect_timeout_s"] + sum(2**a for a in range(d["retries"] - 1)))
        assert worst < 30, name


# --- identification by content --------------------------------------------------


def test_local_mirror_accepts_unknown_content_with_a_warning(tmp_path, capsys):
    make_mirror(tmp_path)
    raw, rec, warning = fetch_file("mnist", "test_labels", [f"file://{tmp_path}"])
    assert rec["published_content"] is False and "source" not in rec
    assert raw == gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert rec["content_md5"] == hashlib.md5(raw).hexdigest()
    assert "differs from the published" in warning
    assert f"from file://{tmp_path}: ok" in capsys.readouterr().out


@pytest.fixture
def kmnist_like(monkeypatch, tmp_path):
    """A third registered data set whose published content is a generated mirror's: what adding
    KMNIST takes is one more registry entry."""
    folder = make_mirror(tmp_path / "kmnist", seed=7)
    files = {
        k: DataFile(f.name, "0" * 32, _content_md5(folder / f.name), f.examples)
        for k, f in DATASETS["mnist"].files.items()
    }
    _register(
        monkeypatch, "kmnist", Dataset("KMNIST", "kmnist", tuple("o ki su tsu na ha ma ya re wo".split()), (), files)
    )
    return tmp_path


def test_recompressed_identical_file_is_the_real_thing_without_warning(kmnist_like):
    f = DATASETS["kmnist"].files["test_labels"]
    original = kmnist_like / "kmnist" / f.name
    other = kmnist_like / "recompressed"
    other.mkdir()
    (other / f.name).write_bytes(gzip.compress(gzip.decompress(original.read_bytes()), compresslevel=9))
    assert (other / f.name).read_bytes() != original.read_bytes()
    _, rec, warning = fetch_file("kmnist", "test_labels", [str(other)])
    assert warning is None and rec["published_content"] is True


def test_a_file_of_another_data_set_is_refused_by_name(kmnist_like, capsys):
    with pytest.raises(DataError, match=r"this is KMNIST's t10k-labels-idx1-ubyte.gz .*but data.dataset is mnist"):
        fetch_file("mnist", "test_labels", [str(kmnist_like / "kmnist")])
    assert "attempt 1/1): failed: t10k-labels-idx1-ubyte.gz: this is KMNIST" in capsys.readouterr().out


def test_real_mnist_mirror_is_published_content_except_rebuilt_train_images(real_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.MIRROR_ENV, str(real_mirror))
    manifest = download(tmp_path / "mnist", PARAMS)
    published = {k: r["published_content"] for k, r in manifest["files"].items()}
    assert published == {"train_images": False, "train_labels": True, "test_images": True, "test_labels": True}
    assert len(manifest["warnings"]) == 1 and "train-images" in manifest["warnings"][0]
    x, y = data.load_split(tmp_path / "mnist", "mnist", "train")
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    # The README's check on the rebuilt file: the well-known mean intensity.
    assert abs(x.float().mean().item() / 255 - 0.1307) < 1e-3


def test_real_fashion_mirror_is_recognised_and_refused_as_mnist(real_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.MIRROR_ENV, str(real_mirror))
    manifest = download(tmp_path / "fashion", {**PARAMS, "dataset": "fashion_mnist"})
    assert manifest["warnings"] == [] and manifest["title"] == "Fashion-MNIST"
    assert all(r["published_content"] for r in manifest["files"].values())  # recompressed by Debian, same bytes
    # So data/fashion_mnist is what the published .gz files make: each file is the published content.
    for f in DATASETS["fashion_mnist"].files.values():
        assert hashlib.md5((tmp_path / "fashion" / f.idx_name).read_bytes()).hexdigest() == f.idx_md5
    # Fashion-MNIST's files where MNIST's are expected (the old $VAE_MNIST_MIRROR pitfall): refused by name.
    monkeypatch.delenv(dl.MIRROR_ENV)
    monkeypatch.setenv(dl.MNIST_MIRROR_ENV, str(real_mirror / "fashion-mnist"))
    with pytest.raises(DataError, match="this is Fashion-MNIST's train-images-idx3-ubyte.gz"):
        download(tmp_path / "mnist", PARAMS)
    assert not (tmp_path / "mnist").exists()


def test_a_truncated_gzip_is_a_data_error():
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: not a valid gzip file"):
        dl.gunzip(gzip.compress(b"\0" * 1000)[:-20], "t10k-labels-idx1-ubyte.gz")


# --- atomic output -------------------------------------------------------------------


def test_a_failed_download_leaves_the_previous_data_untouched(earlier, tiny):
    before = snapshot(earlier)
    # Then a mirror whose 4th file is corrupt: the download fails and nothing of it is left.
    (tiny / "tiny" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a gzip file"):
        download(earlier, tiny_params(str(tiny)), backoff=0)
    assert snapshot(earlier) == before  # no temp directory left behind either


def test_a_failed_first_download_leaves_no_directory(tiny, tmp_path):
    (tiny / "tiny" / "t10k-labels-idx1-ubyte.gz").unlink()  # the 4th file
    with pytest.raises(DataError, match="t10k-labels"):
        download(tmp_path / "data" / "tiny", tiny_params(str(tiny)), backoff=0)
    assert list((tmp_path / "data").iterdir()) == []


def test_written_files_honour_the_umask(tiny, tmp_path):
    old = os.umask(0o022)
    try:
        download(tmp_path / "out", tiny_params(str(tiny)), backoff=0)
        os.umask(0o027)
        from vae.atomic import write_text

        write_text(tmp_path / "group.txt", "x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "group.txt").stat().st_mode) == 0o640
