"""Stage plot@FAMILY-Z: manifold, reconstructions, prior samples and loss curves -> plots/FAMILY-Z/."""
from vae import paths, plots
from vae.data import load_split, to_float
from vae.training import load_model
from stages.common import run_args


def main() -> None:
    params, family, z, run = run_args(__doc__)
    cfg = params["plot"]
    model, _ = load_model(paths.model(run), family, z)
    out = paths.run_plots(run)
    test_x = to_float(load_split(paths.DATA, "test")[0][: cfg["n_recon"]])
    plots.manifold(model, out / "manifold.png", cfg["grid"], cfg["quantile"])
    plots.reconstructions(model, test_x, out / "reconstructions.png")
    plots.prior_samples(model, out / "samples.png", cfg["n_samples"], params["eval"]["seed"])
    plots.loss_curves(paths.history(run), out / "loss_curves.png", f"{run}: loss per epoch")


if __name__ == "__main__":
    main()
