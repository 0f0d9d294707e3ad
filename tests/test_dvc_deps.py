"""dvc.yaml and dvc.lock describe the pipeline truthfully: every stage declares the project code it
runs (so `dvc repro` reruns it when that code changes), and the lock holds only stages that exist."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def local_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Files of the project's own modules that `module` imports, directly or not."""
    seen = set() if seen is None else seen
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists() or str(path.relative_to(ROOT)) in seen:
        return seen
    seen.add(str(path.relative_to(ROOT)))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("vae", "stages"):
                local_imports(name, seen)
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_the_code_it_imports(name):
    stage = STAGES[name]
    module = stage["cmd"].split()[2]  # python -m stages.NAME ...
    deps = set(stage["deps"])
    missing = sorted(local_imports(module) - deps)
    assert not missing, f"dvc.yaml stage {name!r} runs {module} but does not declare deps: {missing}"
    # A module it does not run would rerun it (and make its results stale) for nothing.
    code = {d for d in deps if d.endswith(".py")}
    extra = sorted(code - local_imports(module))
    assert not extra, f"dvc.yaml stage {name!r} declares code it does not import: {extra}"


def test_the_import_walk_finds_indirect_imports():
    # stages.train -> vae.training -> vae.losses: a walk that stopped at one level would pass vacuously.
    assert {"stages/train.py", "stages/common.py", "vae/config.py", "vae/losses.py"} <= local_imports("stages.train")


def test_lock_has_no_stale_stages():
    # DVC keeps lock entries of stages that were renamed or removed; stale ones mislead
    # anyone reading dvc.lock for what produced the committed results.
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    locked = YAML(typ="safe").load((ROOT / "dvc.lock").read_text())["stages"]
    assert "compare" in listed and any(n.startswith("train@") for n in listed)
    stale = sorted(set(locked) - set(listed))
    assert not stale, f"dvc.lock holds stages dvc.yaml no longer defines (delete them from dvc.lock): {stale}"
