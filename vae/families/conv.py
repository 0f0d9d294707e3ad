"""The study's convolutional model: 3 stride-2 convs and 2 linear layers, mirrored with transposed convs."""

from torch import nn

from vae.models import register


@register("conv")
def build(z: int, channels: list[int], hidden: int):
    if len(channels) != 3:
        raise ValueError(f"models.conv.channels must list 3 sizes, got {channels}")
    c1, c2, c3 = channels
    enc = nn.Sequential(
        nn.Conv2d(1, c1, 4, 2, 1),
        nn.ReLU(),  # 14x14
        nn.Conv2d(c1, c2, 4, 2, 1),
        nn.ReLU(),  # 7x7
        nn.Conv2d(c2, c3, 3, 2, 1),
        nn.ReLU(),  # 4x4
        nn.Flatten(),
        nn.Linear(c3 * 16, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 2 * z),
    )
    dec = nn.Sequential(
        nn.Linear(z, hidden),
        nn.ReLU(),
        nn.Linear(hidden, c3 * 16),
        nn.ReLU(),
        nn.Unflatten(1, (c3, 4, 4)),
        nn.ConvTranspose2d(c3, c2, 3, 2, 1),
        nn.ReLU(),  # 7x7
        nn.ConvTranspose2d(c2, c1, 4, 2, 1),
        nn.ReLU(),  # 14x14
        nn.ConvTranspose2d(c1, 1, 4, 2, 1),  # 28x28 logits
    )
    return enc, dec
