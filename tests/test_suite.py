"""The test suite's own plumbing: tests sharing an expensive fixture run on one pytest-xdist worker."""

import os
import subprocess
import sys

from tests.smoke import ROOT

TOY = """
import os, pytest

@pytest.fixture(scope="session")
def built(tmp_path_factory):
    # The log sits beside the xdist workers' own temp folders, so both workers append to one file.
    with open(tmp_path_factory.getbasetemp().parent / "builds.log", "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
    return os.environ["PYTEST_XDIST_WORKER"]

@pytest.fixture(scope="module")
def project(built):
    return built

@pytest.mark.parametrize("i", range(6))
def test_shares_the_build(project, i):
    assert project == os.environ["PYTEST_XDIST_WORKER"]

@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    pass
"""


def test_tests_sharing_a_session_fixture_run_on_one_worker_which_builds_it_once(tmp_path):
    # pytest 9.2 with pytest-xdist 3.8 drops `--dist loadgroup`'s groups without a word
    # (pytest-dev/pytest-xdist#1386): the smoke study was then built on both workers at once.
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_collection_modifyitems  # noqa\n")
    (tmp_path / "test_toy.py").write_text(TOY)
    base = tmp_path / "base"
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-n", "2"]
        + ["--dist", "loadgroup", "--basetemp", str(base), str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "12 passed" in r.stdout
    assert len((base / "builds.log").read_text().split()) == 1
