"""VAE architecture study on MNIST: models, objective, data, training, evaluation, plots, report."""
