"""Stage plot@RECIPE-FAMILY-Z: manifold, latent space, reconstructions, samples, loss curves -> plots/RUN/."""
from vae import paths, plots
from vae.data import load_split, to_float
from vae.metrics import posterior_stats
from vae.training import load_model
from stages.common import run_args


def main() -> None:
    params, _, family, z, run = run_args(__doc__)
    cfg = params["plot"]
    model, _ = load_model(paths.model(run), family, z)
    out = paths.run_plots(run)
    images, labels = load_split(paths.DATA, "test")
    test_x = to_float(images)
    plots.manifold(model, out / "manifold.png", cfg["grid"], cfg["quantile"])
    mu, _ = posterior_stats(model, test_x, params["eval"]["batch_size"])
    plots.latent_space(mu, labels, out / "latent.png", f"{run}: test-set posterior means")
    plots.reconstructions(model, test_x[: cfg["n_recon"]], out / "reconstructions.png")
    plots.prior_samples(model, out / "samples.png", cfg["n_samples"], params["eval"]["seed"])
    plots.loss_curves(paths.history(run), out / "loss_curves.png", f"{run}: loss per epoch")


if __name__ == "__main__":
    main()
