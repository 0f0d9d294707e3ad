"""Who may use the study's cluster (#42): the embedded one only with its own TLS credentials, an external
one over TLS unless --insecure, every way of failing to connect one line within --connect-timeout, and a
worker whose packages differ from ours refused by name."""

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from argparse import Namespace
from importlib.metadata import version
from pathlib import Path

import pytest
from distributed import LocalCluster
from distributed.security import Security

from tests.smoke import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import engine_cluster  # noqa: E402


def options(**kw) -> Namespace:
    base = {
        "scheduler": None,
        "workers": 1,
        "dashboard": False,
        "gpus_per_run": 0,
        "insecure": False,
        "connect_timeout": 3.0,
        "tls_ca_file": None,
        "tls_cert": None,
        "tls_key": None,
    }
    return Namespace(**{**base, **kw})


def refused(call, *args) -> tuple[str, float]:
    """The one line a call exits with, and how long it took."""
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as e:
        call(*args)
    line = str(e.value.code)
    assert line.startswith("study: ") and "\n" not in line, line
    return line, time.monotonic() - t0


def credentials(folder: Path, name: str) -> dict:
    """A CA certificate and a key pair signed by it, as files (Dask's temporary ones: self-signed, so the
    certificate is its own CA)."""
    sec = Security.temporary()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.pem").write_text(sec.tls_ca_file)
    (folder / f"{name}.key").write_text(sec.tls_scheduler_key)
    return {
        "security": sec,
        "tls_ca_file": str(folder / f"{name}.pem"),
        "tls_cert": str(folder / f"{name}.pem"),
        "tls_key": str(folder / f"{name}.key"),
    }


STRANGER = """
import sys
from distributed import Client
from distributed.security import Security
try:
    Client(sys.argv[1], security=eval(sys.argv[2]), timeout=3)
except BaseException as e:  # how it was turned away: its type, and whether it is an OSError (SSL errors are)
    print(type(e).__name__, isinstance(e, OSError))
    sys.exit(1)
print("connected")
"""


def stranger(address: str, security: str) -> subprocess.CompletedProcess:
    """A client in a fresh process, with `security` (a Python expression), trying the cluster at `address`."""
    return subprocess.run(
        [sys.executable, "-c", STRANGER, address, security], capture_output=True, text=True, timeout=60
    )


def test_the_embedded_cluster_refuses_a_client_without_its_credentials():
    client, cluster = engine_cluster.connect(options())
    try:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:"), address
        assert client.submit(lambda: 42, pure=False).result() == 42  # the study's own client gets in
        # Each stranger in a process of its own: distributed's clients share an IO loop per process, and one left
        # half-connected by a refused handshake made the next client's loop fail to start (inside distributed).
        no_credentials = stranger(address, "None")
        assert no_credentials.stdout.split() == ["TypeError", "False"], (
            no_credentials.stdout + no_credentials.stderr[-2000:]
        )
        t0 = time.monotonic()
        own = stranger(address, "Security.temporary()")  # credentials of its own, not signed by the cluster's
        assert own.returncode == 1 and own.stdout.split()[-1] == "True", own.stdout + own.stderr[-2000:]
        assert time.monotonic() - t0 < 30
        # Not tried: plain TCP to the TLS port, where distributed's own Client waits on a handshake the port never
        # gives. The study refuses tcp:// unless --insecure (test_a_scheduler_without_tls_is_refused_unless_insecure)
        # and bounds such a wait with its own probe (test_an_address_that_refuses_or_never_answers_is_one_line_...).
    finally:
        client.close()
        cluster.close()


PAGES = ("/health", "/metrics", "/json/identity.json", "/info/main/workers.html")


def pages(port: int) -> dict:
    """What each of Dask's HTTP pages answers on 127.0.0.1:port, over plain HTTP, asked by anyone."""
    answers = {}
    for page in PAGES:
        try:
            answers[page] = urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=10).status
        except urllib.error.HTTPError as e:
            answers[page] = e.code
    return answers


def http_ports(client, cluster) -> list[int]:
    """The HTTP port of the embedded scheduler and of each of its workers."""
    workers = client.run(lambda dask_worker: dask_worker.http_server.port)
    return [cluster.scheduler.http_server.port, *workers.values()]


def test_without_dashboard_the_embedded_cluster_serves_no_page():
    """Dask opens an HTTP server on its scheduler (:8787) and each worker even with no dashboard; the
    scheduler's pages name every worker's address and show its logs, to any user, outside the cluster's TLS."""
    client, cluster = engine_cluster.connect(options(workers=2))
    try:
        ports = http_ports(client, cluster)
        assert len(ports) == 3 and 8787 not in ports, ports  # a free port, not one another cluster may hold
        assert [pages(port) for port in ports] == [dict.fromkeys(PAGES, 404)] * 3
    finally:
        client.close()
        cluster.close()
    client, cluster = engine_cluster.connect(options(dashboard=True))  # in the same process: asked, they come back
    try:
        scheduler, worker = http_ports(client, cluster)
        assert pages(scheduler) == dict.fromkeys(PAGES, 200)
        assert pages(worker)["/health"] == 200
    finally:
        client.close()
        cluster.close()


@pytest.mark.parametrize("address", ["tcp://10.0.0.1:8786", "10.0.0.1:8786", "ws://10.0.0.1:8786"])
def test_a_scheduler_without_tls_is_refused_unless_insecure(address):
    line, _ = refused(engine_cluster.check_options, options(scheduler=address))
    assert line.startswith(f"study: --scheduler {address} is not tls://: a Dask scheduler runs whatever code")
    assert "--insecure" in line
    engine_cluster.check_options(options(scheduler=address, insecure=True))  # said so: accepted


def test_the_study_command_refuses_tcp_before_it_touches_anything(tmp_path):
    import subprocess

    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "study.py"), "--scheduler", "tcp://127.0.0.1:1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is not tls://" in r.stderr


@pytest.fixture(scope="module")
def tls_scheduler(tmp_path_factory):
    """A TLS scheduler with one in-process worker, and the files a client needs for it."""
    folder = tmp_path_factory.mktemp("tls")
    ours = credentials(folder, "ours")
    cluster = LocalCluster(
        n_workers=1, processes=False, host="127.0.0.1", security=ours["security"], dashboard_address="127.0.0.1:0"
    )
    yield cluster.scheduler_address, ours, credentials(folder, "other")
    cluster.close()


def tls(address: str, files: dict, **kw) -> Namespace:
    return options(scheduler=address, **{k: v for k, v in files.items() if k != "security"}, **kw)


def test_a_tls_scheduler_with_the_right_files_connects(tls_scheduler):
    address, ours, _ = tls_scheduler
    engine_cluster.check_options(tls(address, ours))
    client, cluster = engine_cluster.connect(tls(address, ours))
    try:
        assert cluster is None and client.submit(lambda: 1, pure=False).result() == 1
    finally:
        client.close()


def test_every_connection_failure_is_one_line_naming_the_option(tls_scheduler, tmp_path):
    address, ours, other = tls_scheduler
    line, _ = refused(engine_cluster.check_options, options(scheduler=address))
    assert "missing --tls-ca-file, --tls-cert, --tls-key" in line
    line, _ = refused(engine_cluster.check_options, tls(address, {**ours, "tls_key": str(tmp_path / "none.key")}))
    assert line == f"study: --tls-key {tmp_path / 'none.key'}: cannot read it (No such file or directory)"
    (tmp_path / "bad.key").write_text("not a key\n")
    line, _ = refused(engine_cluster.check_options, tls(address, {**ours, "tls_key": str(tmp_path / "bad.key")}))
    assert line.startswith(f"study: --tls-cert {ours['tls_cert']} with --tls-key {tmp_path / 'bad.key'}: not a PEM")
    line, _ = refused(engine_cluster.check_options, tls(address, {**ours, "tls_ca_file": str(tmp_path / "bad.key")}))
    assert line.startswith(f"study: --tls-ca-file {tmp_path / 'bad.key'}: not a PEM certificate")
    # The CA that signed the scheduler's certificate is not the one given: at once, not after the timeout.
    line, seconds = refused(engine_cluster.connect, tls(address, {**ours, "tls_ca_file": other["tls_ca_file"]}))
    assert "its certificate is not signed by --tls-ca-file" in line and seconds < 2, (line, seconds)
    # The scheduler does not know this machine's certificate.
    wrong_cert = {**ours, "tls_cert": other["tls_cert"], "tls_key": other["tls_key"]}
    line, seconds = refused(engine_cluster.connect, tls(address, wrong_cert))
    assert "refused this machine's certificate (--tls-cert" in line and seconds < 4, (line, seconds)


def test_an_address_that_refuses_or_never_answers_is_one_line_within_the_timeout(tls_scheduler):
    _, ours, _ = tls_scheduler
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line, seconds = refused(engine_cluster.connect, tls(f"tls://127.0.0.1:{port}", ours))
    assert "connection refused" in line and seconds < 1, (line, seconds)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        line, seconds = refused(engine_cluster.connect, tls(f"tls://{address}", ours, connect_timeout=2))
        assert "no TLS answer within 2 s (--connect-timeout)" in line and 2 <= seconds < 5, (line, seconds)
        line, seconds = refused(
            engine_cluster.connect, options(scheduler=f"tcp://{address}", insecure=True, connect_timeout=2)
        )
        assert "no Dask answer within 2 s (--connect-timeout)" in line and 2 <= seconds < 8, (line, seconds)


def test_a_worker_whose_packages_differ_is_refused_by_name():
    client, cluster = engine_cluster.connect(options(workers=2))  # ours: the same versions everywhere
    try:
        first = sorted(client.scheduler_info()["workers"])[0]

        def old_torch():  # what a worker set up from another lock would report
            import distributed.versions

            real = distributed.versions._version_cached
            distributed.versions._version_cached = lambda pkg: "2.0.0" if pkg == "torch" else real(pkg)

        client.run(old_torch, workers=[first])
        here = version("torch")
        line, _ = refused(engine_cluster.check_versions, client)
        assert line.startswith(f"study: worker {first} has torch 2.0.0, this machine {here}: install requirements.lock")
    finally:
        client.close()
        cluster.close()
