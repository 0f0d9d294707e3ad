"""Stage download: fetch and verify data.dataset's .gz files, and write their decompressed IDX files
and a manifest of their content into data/DATASET (sources: see vae/download.py)."""

from stages.common import checked_params, parse_args, stage_main
from vae import paths
from vae.download import download


def main() -> None:
    parse_args(__doc__)
    params = checked_params()
    # Where each file came from (the mirror, the .gz's md5) is printed as it is fetched; data/DATASET
    # holds only the content, so its DVC hash is the same whichever mirror or compressor made the .gz.
    manifest = download(paths.data(params["data"]["dataset"]), params["data"])
    for rec in manifest["files"].values():
        print(f"{rec['file']}: {rec['examples']} examples, content md5 {rec['content_md5']}")


if __name__ == "__main__":
    stage_main("download", main)
