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
STAGE_FAMILIES = YAML(typ="safe").load((ROOT / "params.yaml").read_text())["families"]


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


def imported_code(name: str) -> set[str]:
    """What stage `name` imports: its modules, and the family files vae.models imports by name at run
    time (ast cannot see them): the run's own family for a per-run or per-cell stage, every family for
    check (its schema of models.FAMILY is each family's signature)."""
    stage = STAGES[name]
    code = local_imports(stage["cmd"].split()[2])  # python -m stages.NAME ...
    if "vae/models.py" in code:
        if "${item.family}" in stage["cmd"]:
            code.add("vae/families/${item.family}.py")
        elif "vae/config.py" in code:
            code.add("vae/families")
    return code


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_the_code_it_imports(name):
    deps = set(STAGES[name]["deps"])
    missing = sorted(imported_code(name) - deps)
    assert not missing, f"dvc.yaml stage {name!r} does not declare deps on code it runs: {missing}"
    # A module it does not run would rerun it (and make its results stale) for nothing.
    code = {d for d in deps if d.endswith(".py") or d == "vae/families"}
    extra = sorted(code - imported_code(name))
    assert not extra, f"dvc.yaml stage {name!r} declares code it does not import: {extra}"


def test_a_run_imports_its_own_family_alone(tmp_path):
    """What test_stage_deps_are_the_code_it_imports assumes of vae.models: building a model imports that
    family's file and no other (a registry importing them all would make every run depend on every family)."""
    code = (
        "import sys\nfrom vae.checkpoints import load_model\nfrom vae.models import build_model\n"
        "build_model('conv', 2, {'channels': [4, 4, 4], 'hidden': 8})\n"
        "print(sorted(m for m in sys.modules if m.startswith('vae.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    loaded = eval(out)
    assert "vae.families.conv" in loaded
    assert [m for m in loaded if m.startswith("vae.families.") and m != "vae.families.conv"] == []
    assert "vae.config" not in loaded and "pydantic" not in out


def test_no_run_imports_the_validation():
    for name in ("train", "evaluate", "plot", "compare", "download"):
        assert "vae/config.py" not in imported_code(name), f"{name} imports the validation of params.yaml"
    assert "vae/config.py" in imported_code("check")


def test_the_staleness_table_in_docs_is_dvc_yamls():
    """docs/dependencies.md shows, for each source file, the stages an edit to it makes stale: the table
    tools/dependencies.py computes from dvc.yaml as DVC resolves it."""
    from tools.dependencies import stage_deps, stale, table

    assert table() in (ROOT / "docs" / "dependencies.md").read_text(), (
        "docs/dependencies.md is out of date: paste in the output of `python tools/dependencies.py`"
    )
    # The goal of the narrow dependencies: validation, report, plotting, download and one family's file
    # stale no run of another family (and the first four no run at all).
    deps = stage_deps()
    trains = {n for n in deps if n.startswith(("train@", "train_subset@"))}
    assert {n for n in trains if n.startswith("train_subset@")}, "the subset recipes' runs are checked too"
    for path in ("vae/config.py", "vae/report.py", "vae/plots.py", "vae/download.py", "vae/metrics.py"):
        assert not stale(deps, path) & trains, path
        evaluates = {n for n in stale(deps, path) if n.startswith(("evaluate@", "evaluate_subset@"))}
        assert not evaluates or path == "vae/metrics.py", path
    for fam in STAGE_FAMILIES:
        hit = stale(deps, f"vae/families/{fam}.py") & trains
        assert hit and all(f"-{fam}-" in n for n in hit), fam


def test_the_import_walk_finds_indirect_imports():
    # stages.train -> vae.training -> vae.losses: a walk that stopped at one level would pass vacuously.
    assert {"stages/train.py", "stages/common.py", "vae/params.py", "vae/losses.py"} <= local_imports("stages.train")


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
