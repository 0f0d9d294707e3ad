"""One file per model family, named as params.yaml names it: docs/architectures.md says how to add one."""
