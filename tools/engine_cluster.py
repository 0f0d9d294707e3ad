"""The study's Dask cluster: the embedded one, or a scheduler you started, and who may use it.

A Dask scheduler runs whatever code it is sent, as the user who started it. So the embedded cluster
listens on 127.0.0.1 with temporary TLS credentials that exist only in this process and its workers'
(`LocalCluster(security=True)`), and an external scheduler must be `tls://` unless `--insecure` says
the network is trusted. Every way a connection can fail ends in one line naming the option to fix.
"""

from __future__ import annotations

import socket
import ssl
import sys
import warnings

# A task only waits on its DVC process, so Dask's statistical profiler (a stack sample every 10 ms) and its
# 20 ms event-loop health check are pure cost, taken from training: the embedded cluster of 2 workers used
# 5.7 CPU-s a minute with them, 1.8 without (the 2-core machine, median of 3; benchmarks/engine_overhead.py).
# Workers on other machines keep their own configuration (docs/cluster.md).
DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    # A run whose worker died is rerun once elsewhere, a second death names it (KilledWorker). A run that
    # raised is not rerun: its own code failed and would fail again (tasks are submitted without retries).
    "distributed.scheduler.allowed-failures": 1,
    # One run per worker thread at a time, none queued behind it: a worker's death counts against every run
    # it holds, and a queued run would be named KilledWorker after two deaths without having started.
    "distributed.scheduler.worker-saturation": 1.0,
}
# What a run's bytes depend on, besides Python and Dask's own packages (which get_versions always reports).
VERSIONED = ["torch", "torchvision", "numpy", "dvc", "dvc-data", "pydantic"]
TLS_OPTIONS = (("--tls-ca-file", "tls_ca_file"), ("--tls-cert", "tls_cert"), ("--tls-key", "tls_key"))


def refuse(why: str) -> None:
    sys.exit(f"study: {why}")


def reason(e: ssl.SSLError) -> str:
    return e.reason or str(e.args[-1]).split(" (_ssl")[0]


def check_options(args) -> None:
    """Refuse, before anything else starts, a scheduler address or TLS options that cannot work."""
    if not args.scheduler:
        return
    given = [flag for flag, attr in TLS_OPTIONS if getattr(args, attr)]
    if not args.scheduler.startswith("tls://"):
        if not args.insecure:
            refuse(
                f"--scheduler {args.scheduler} is not tls://: a Dask scheduler runs whatever code it is sent, so "
                "anyone who reaches its port runs code as you; start it with TLS (docs/cluster.md), or add "
                "--insecure on a private network you trust"
            )
        if given:
            refuse(f"{', '.join(given)} given for {args.scheduler}: TLS needs a tls:// address")
        return
    missing = [flag for flag, attr in TLS_OPTIONS if not getattr(args, attr)]
    if missing:
        refuse(
            f"--scheduler {args.scheduler} is a TLS scheduler: missing {', '.join(missing)} (--tls-ca-file: the CA "
            "that signed the scheduler's certificate; --tls-cert, --tls-key: this machine's certificate and key)"
        )
    tls_context(args)


def tls_context(args) -> ssl.SSLContext:
    """This machine's client context from the --tls-* files, each checked on its own so that a bad one is named."""
    for flag, attr in TLS_OPTIONS:
        try:
            open(getattr(args, attr), "rb").close()
        except OSError as e:
            refuse(f"{flag} {getattr(args, attr)}: cannot read it ({e.strerror})")
    try:
        ctx = ssl.create_default_context(cafile=args.tls_ca_file)
    except ssl.SSLError as e:
        refuse(f"--tls-ca-file {args.tls_ca_file}: not a PEM certificate ({reason(e)}); give the CA's, ca.pem")
    try:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    except ssl.SSLError as e:
        refuse(
            f"--tls-cert {args.tls_cert} with --tls-key {args.tls_key}: not a PEM certificate and its own private "
            f"key ({reason(e)}); give this machine's me.pem and me.key"
        )
    ctx.check_hostname = False  # as Dask's own TLS: the CA is what is trusted, not host names
    return ctx


def probe(args) -> None:
    """Reach the scheduler, over TLS complete a handshake, and hear it speak first as a Dask scheduler does,
    all within --connect-timeout. Dask's own connect retries every failure (a refused port, a rejected
    certificate) until its timeout and then names none of them, and waits without end for a server that
    accepts a connection and never answers (distributed 2026.8)."""
    from distributed.comm import get_address_host_port

    address, timeout = args.scheduler, args.connect_timeout
    host, port = get_address_host_port(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as e:
        refuse(f"--scheduler {address}: no such host ({e.strerror})")
    except ConnectionRefusedError:
        refuse(f"--scheduler {address}: connection refused: no scheduler listens there; check the address and port")
    except TimeoutError:
        refuse(f"--scheduler {address}: no answer within {timeout:g} s (--connect-timeout); check the address")
    except OSError as e:
        refuse(f"--scheduler {address}: cannot reach it ({e.strerror})")
    tls = address.startswith("tls://")
    try:
        if tls:
            sock = tls_context(args).wrap_socket(sock)
        first = sock.recv(1)
    except ssl.SSLCertVerificationError:
        refuse(
            f"--scheduler {address}: its certificate is not signed by --tls-ca-file {args.tls_ca_file}; "
            "give the CA that signed the scheduler's certificate"
        )
    except ssl.SSLError as e:
        if "alert" in str(e).lower():  # TLS 1.3: the scheduler refuses our certificate after the handshake
            refuse(
                f"--scheduler {address}: it refused this machine's certificate (--tls-cert {args.tls_cert}: "
                f"{reason(e)}); use one signed by the scheduler's CA"
            )
        refuse(f"--scheduler {address}: the TLS handshake failed ({reason(e)}); is it a TLS scheduler?")
    except TimeoutError:
        refuse(
            f"--scheduler {address}: no {'TLS' if tls else 'Dask'} answer within {timeout:g} s (--connect-timeout); "
            f"is it a Dask scheduler{'' if tls else ', and without TLS (a TLS one needs tls://)'}?"
        )
    except OSError as e:
        refuse(f"--scheduler {address}: the connection failed ({e}); is it a Dask scheduler?")
    finally:
        sock.close()
    if not first:
        refuse(
            f"--scheduler {address}: it closed the connection at once; is it a Dask scheduler{'' if tls else ' without TLS'}?"
        )


def http_routes(dashboard: bool) -> dict:
    """Dask's HTTP pages for the embedded cluster: all of them with --dashboard, none without.

    Dask opens an HTTP server on its scheduler and on every worker even without a dashboard, and serves
    /metrics, /health, /json/identity.json and /info (the workers' addresses, logs and call stacks) there
    in plain text to anyone on the machine, outside the TLS that guards the cluster itself. With no routes
    every request is a 404. Set globally rather than in a `with`: a nanny that restarts its worker later
    hands it this configuration again."""
    from distributed.config import defaults

    return {
        f"distributed.{node}.http.routes": defaults["distributed"][node]["http"]["routes"] if dashboard else []
        for node in ("scheduler", "worker")
    }


def connect(args):
    """(client, the embedded cluster or None), every worker checked to run our versions."""
    import dask
    from distributed import Client, LocalCluster
    from distributed.security import Security

    dask.config.set(DASK_CONFIG)  # the embedded cluster's scheduler reads it, its workers get it from their nanny
    cluster = None
    if args.scheduler:
        probe(args)
        security = None
        if args.scheduler.startswith("tls://"):
            security = Security(
                tls_ca_file=args.tls_ca_file,
                tls_client_cert=args.tls_cert,
                tls_client_key=args.tls_key,
                require_encryption=True,
            )
        try:
            client = Client(args.scheduler, security=security, timeout=args.connect_timeout)
        except (OSError, TimeoutError) as e:
            refuse(f"--scheduler {args.scheduler}: {str(e).splitlines()[0]}")
    else:
        dask.config.set(http_routes(args.dashboard))
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            security=True,
            # With no address Dask still opens its HTTP server, on :8787; port 0 takes a free one instead.
            dashboard_address="127.0.0.1:8787" if args.dashboard else "127.0.0.1:0",
            resources={"GPU": 1} if args.gpus_per_run else None,
        )
        client = Client(cluster)
    try:
        check_versions(client)
    except BaseException:
        client.close()
        if cluster is not None:
            cluster.close()
        raise
    return client, cluster


def check_versions(client) -> None:
    """Refuse a scheduler or worker whose packages differ from this machine's: the same runs would train
    other bytes there, or fail to unpickle what we send."""
    from distributed.versions import scheduler_relevant_packages

    # check=True only warns in distributed 2026.8 (a table of every difference); the line below refuses.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        versions = client.get_versions(check=True, packages=VERSIONED)
    ours = versions["client"]["packages"]
    theirs = {"the scheduler": versions["scheduler"]["packages"]}
    theirs |= {f"worker {address}": v["packages"] for address, v in sorted(versions["workers"].items())}
    for who, packages in theirs.items():
        for name in sorted(ours):
            if who == "the scheduler" and name not in scheduler_relevant_packages:
                continue
            if packages.get(name) != ours[name]:
                refuse(
                    f"{who} has {name} {packages.get(name)}, this machine {ours[name]}: install requirements.lock "
                    "there (`pip install --require-hashes -r requirements.lock`), or leave it out of the cluster"
                )
