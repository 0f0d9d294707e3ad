"""What a run's bytes depend on, pinned and checked (#42): every installed package at the version of
requirements.lock, with hashes, installed by `make setup`."""

import re
from importlib.metadata import version

from tests.smoke import ROOT


def pins(path) -> dict[str, str]:
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    text = path.read_text()
    return {norm(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", text, re.M)}


def test_the_lock_pins_every_requirement_at_its_version_with_hashes():
    lock, top = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements.txt")
    assert {k: lock.get(k) for k in top} == top, "requirements.txt changed: refresh the lock (`make lock`)"
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    unhashed = [
        a.split()[0]
        for a, b in zip(lines, lines[1:] + [""])
        if a[:1].isalnum() and "==" in a and "--hash=sha256:" not in b
    ]
    assert len(lock) > 150 and not unhashed, unhashed


def test_this_environment_is_the_lock():
    """What `make setup` installed is what the lock says (a stale venv, or a package installed by hand
    over a pinned one, trains other bytes than CI)."""
    differ = {name: (pinned, version(name)) for name, pinned in pins(ROOT / "requirements.lock").items()}
    differ = {k: v for k, v in differ.items() if v[0] != v[1]}
    assert not differ, (
        f"installed versions differ from requirements.lock (pinned, installed): {differ}; run `make setup`"
    )


def test_make_setup_installs_the_lock_with_hashes():
    rule = (ROOT / "Makefile").read_text().split("$(VENV)/.installed:")[1].split("\n\n")[0]
    assert "requirements.lock" in rule.splitlines()[0]
    assert "pip install --quiet --require-hashes -r requirements.lock" in rule
