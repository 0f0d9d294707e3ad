"""Stage compare: aggregate every run's metrics into the comparison table and curves."""

from stages.common import checked_params, parse_args, stage_main
from vae import cells, comparison, paths
from vae.params import runs


def main() -> None:
    parse_args(__doc__)
    params = checked_params()
    run_list = runs(params)  # from params, not a glob: stale files of dropped runs stay ignored
    loaded = cells.load_runs(run_list, params)
    comparison.write_comparison(
        loaded,
        comparison.load_curves(run_list, loaded),
        params["data"]["dataset"],
        json_path=paths.METRICS / "comparison.json",
        cells_dir=paths.METRICS / "cells",
        csv_path=paths.PLOTS / "comparison.csv",
        curves_path=paths.METRICS / "curves.csv",
        md_path=paths.METRICS / "comparison.md",
        png_path=paths.PLOTS / "comparison.png",
    )
    print((paths.METRICS / "comparison.md").read_text())


if __name__ == "__main__":
    stage_main("compare", main)
