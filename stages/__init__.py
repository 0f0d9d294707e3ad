"""The pipeline's stages, one module each (`python -m stages.NAME`, as dvc.yaml runs them)."""

import sys

# DVC runs each stage with the `python` on PATH. Outside the project's venv that is usually a
# Python without its requirements: say so in one line instead of an ImportError's traceback.
try:
    import ruamel.yaml  # noqa: F401
    import torch  # noqa: F401
except ImportError as e:
    sys.exit(
        f"stages: {sys.executable} lacks the project's requirements ({e.name} is missing): activate "
        "the project's venv (`. .venv/bin/activate`) or run `make study`, which uses it"
    )
