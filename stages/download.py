"""Stage download: fetch and verify MNIST into data/mnist (see vae/data.py for sources)."""
import sys

from stages.common import params_or_exit
from vae import paths
from vae.data import DataError, download


def main() -> None:
    params = params_or_exit("download")
    try:
        manifest = download(paths.DATA, params["data"])
    except DataError as e:
        sys.exit(f"download: {e}")
    for rec in manifest["files"].values():
        print(f"{rec['file']}: {rec['examples']} examples from {rec['source']}")


if __name__ == "__main__":
    main()
