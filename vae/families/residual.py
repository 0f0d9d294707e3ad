"""The study's residual conv model: pre-activation residual blocks at 14x14 and 7x7."""

from torch import nn

from vae.models import register


class ResBlock(nn.Module):
    """Pre-activation residual block: x + conv(relu(conv(relu(x))))."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x):
        return x + self.body(x)


@register("residual")
def build(z: int, channels: list[int], blocks: int, hidden: int):
    # Downsample first: residual blocks at 28x28 would cost ~4x the arithmetic
    # on a CPU for little gain on MNIST.
    if len(channels) != 2:
        raise ValueError(f"models.residual.channels must list 2 sizes, got {channels}")
    c1, c2 = channels
    res = lambda c: [ResBlock(c) for _ in range(blocks)]  # noqa: E731
    enc = nn.Sequential(
        nn.Conv2d(1, c1, 4, 2, 1),
        *res(c1),  # 14x14
        nn.Conv2d(c1, c2, 4, 2, 1),
        *res(c2),  # 7x7
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * 49, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 2 * z),
    )
    dec = nn.Sequential(
        nn.Linear(z, hidden),
        nn.ReLU(),
        nn.Linear(hidden, c2 * 49),
        nn.Unflatten(1, (c2, 7, 7)),
        *res(c2),
        nn.ConvTranspose2d(c2, c1, 4, 2, 1),
        *res(c1),  # 14x14
        nn.ReLU(),
        nn.ConvTranspose2d(c1, 1, 4, 2, 1),  # 28x28 logits
    )
    return enc, dec
