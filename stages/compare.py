"""Stage compare: aggregate every run's metrics into the comparison table."""
from vae import paths, report
from vae.config import load_params, runs


def main() -> None:
    params = load_params()
    df = report.load_metrics(runs(params))
    report.write_comparison(df, params["compare"]["best"],
                            paths.METRICS / "comparison.json", paths.PLOTS / "comparison.csv",
                            paths.METRICS / "comparison.md")
    print((paths.METRICS / "comparison.md").read_text())


if __name__ == "__main__":
    main()
