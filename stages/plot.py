"""Stage plot@RECIPE-FAMILY-Z: pictures of the cell's run at seed plot.seed -> plots/RECIPE-FAMILY-Z/.

Manifold, latent space, reconstructions, prior samples and loss curves; one seed
per cell, since pictures of three seeds of a healthy run look alike (the
comparison table carries the spread)."""

from stages.common import parse_args, run_params, stage_main
from vae import paths, plots
from vae.checkpoints import load_model
from vae.data import DATASETS, load_split, scored_test_images, to_float
from vae.evaluation import posterior_stats
from vae.params import cell_name, stage


def main() -> None:
    args = parse_args(__doc__, per="cell")
    params, run = run_params(args)
    cfg, dataset = params["plot"], params["data"]["dataset"]
    model, state = load_model(paths.model(run), args.family, args.z, stage(params, "train", args.recipe, run))
    out = paths.run_plots(cell_name(args.recipe, args.family, args.z))
    images, labels = load_split(paths.data(dataset), dataset, "test")
    # A binarized run is shown the test images it was scored on: the fixed binarization.
    test_x = scored_test_images(to_float(images), state.get("binarize", "none"))
    plots.manifold(model, out / "manifold.png", cfg["grid"], cfg["quantile"])
    mu, _ = posterior_stats(model, test_x, params["eval"]["batch_size"])
    title = DATASETS[dataset].title
    plots.latent_space(
        mu, labels, out / "latent.png", f"{run}: {title} test-set posterior means", list(DATASETS[dataset].class_names)
    )
    plots.reconstructions(model, test_x[: cfg["n_recon"]], out / "reconstructions.png")
    plots.prior_samples(model, out / "samples.png", cfg["n_samples"], params["eval"]["seed"])
    plots.loss_curves(paths.history(run), out / "loss_curves.png", f"{run} on {title}: loss per epoch")


if __name__ == "__main__":
    stage_main("plot", main)
