"""Stage compare: aggregate every run's metrics into the comparison table and curves."""
from stages.common import params_or_exit
from vae import paths, report
from vae.config import runs


def main() -> None:
    params = params_or_exit("compare")
    run_list = runs(params)  # from params, not a glob: stale files of dropped runs stay ignored
    df = report.load_metrics(run_list)
    report.write_comparison(df, report.load_curves(run_list), params["compare"]["best"],
                            json_path=paths.METRICS / "comparison.json",
                            csv_path=paths.PLOTS / "comparison.csv",
                            curves_path=paths.METRICS / "curves.csv",
                            md_path=paths.METRICS / "comparison.md",
                            png_path=paths.PLOTS / "comparison.png")
    print((paths.METRICS / "comparison.md").read_text())


if __name__ == "__main__":
    main()
