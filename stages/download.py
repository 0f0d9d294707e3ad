"""Stage download: fetch and verify data.dataset into data/DATASET (sources: see vae/data.py)."""
from vae import paths
from vae.config import load_params
from vae.data import download
from stages.common import parse_args, stage_main


def main() -> None:
    parse_args(__doc__)
    params = load_params()
    manifest = download(paths.data(params["data"]["dataset"]), params["data"])
    for rec in manifest["files"].values():
        print(f"{rec['file']}: {rec['examples']} examples from {rec['source']}")


if __name__ == "__main__":
    stage_main("download", main)
