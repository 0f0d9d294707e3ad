"""Which stages an edit to each source file makes stale, from dvc.yaml as DVC resolves it.

    python tools/dependencies.py          # the table of docs/dependencies.md

An edit makes stale the stages that declare the file as a dependency (what `dvc status` lists after
it); their outputs change only if the edit changes what they compute, and only then do the stages
downstream of them rerun too. tests/test_dvc_deps.py checks the table in docs/ against this one.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("check", "download", "train", "evaluate", "plot", "compare")


def stage_deps(root: Path = ROOT) -> dict[str, set[str]]:
    """Every stage's code dependencies (files, or folders of code), as DVC resolves dvc.yaml."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {
            s.name: {d.def_path for d in s.deps if d.def_path.startswith(("vae/", "stages/"))}
            for s in repo.index.stages
        }


def sources(root: Path = ROOT) -> list[str]:
    return sorted(str(p.relative_to(root)) for d in ("stages", "vae") for p in (root / d).rglob("*.py"))


def stale(deps: dict[str, set[str]], path: str) -> set[str]:
    return {name for name, ds in deps.items() if any(path == d or path.startswith(d + "/") for d in ds)}


def describe(names: set[str], every: set[str], families: list[str]) -> str:
    """`all` of a group, `FAMILY's` share of it, or how many of how many."""
    if not names:
        return "-"
    if names == every:
        return "all" if len(every) == 1 else f"all {len(every)}"
    for fam in families:
        if names == {n for n in every if f"-{fam}-" in n}:
            return f"{fam}'s {len(names)}"
    return f"{len(names)} of {len(every)}"


def table(root: Path = ROOT) -> str:
    deps = stage_deps(root)
    by_group = defaultdict(set)
    for name in deps:  # a subset recipe's stages (train_subset@...) count with their group's
        by_group[name.split("@")[0].removesuffix("_subset")].add(name)
    families = sorted({f.stem for f in (root / "vae" / "families").glob("*.py")} - {"__init__"})
    rows = ["| file | " + " | ".join(f"{g}@" if "@" in next(iter(by_group[g])) else g for g in GROUPS) + " |"]
    rows.append("| --- |" + " --- |" * len(GROUPS))
    for path in sources(root):
        hit = stale(deps, path)
        rows.append(
            f"| {path} | " + " | ".join(describe(hit & by_group[g], by_group[g], families) for g in GROUPS) + " |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
