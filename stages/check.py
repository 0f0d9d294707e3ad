"""Stage check: validate params.yaml before any other stage runs.

DVC deletes a stage's outputs before running its command, so a stage that
validated its own params would lose its outputs to a typo. Every stage depends
on this stage's output, whose bytes never change: a bad param stops `dvc repro`
here, before anything is deleted, and a good change reruns nothing by itself.
"""
from vae import paths
from vae.atomic import write_text
from vae.config import load_params
from stages.common import parse_args, stage_main


def main() -> None:
    parse_args(__doc__)
    load_params()
    write_text(paths.CHECKED, "params.yaml is valid\n")


if __name__ == "__main__":
    stage_main("check", main)
