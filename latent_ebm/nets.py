"""Networks of the paper's Appendix A.2: DCGAN-like generators and the ratio network; and the
encoder of the amortised posterior start (beyond the paper, ARCHITECTURE §2).

Generators (Table 5) are stacks of transposed convolutions with LeakyReLU(0.2), a Tanh output
and no normalisation layers; each family is a list of layer specs keyed by the image size, so a
new resolution is one more entry. The encoder mirrors the generator of its image size. Every
weight gets Xavier initialisation (A.3).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GENERATOR_FAMILIES", "Encoder", "Generator", "RatioNet", "xavier_init"]

# Layer specs: (width multiple of ngf, kernel, stride, padding); width 0 means image channels.
# The first layer maps the (nz, 1, 1) latent to a k x k map, each stride-2 layer doubles it.
GENERATOR_FAMILIES: dict[str, list[tuple[int, int, int, int]]] = {
    # 8x8, scikit-learn digits (the small member of the family): 2x2 -> 4x4 -> 8x8.
    "8": [(4, 2, 1, 0), (2, 4, 2, 1), (0, 4, 2, 1)],
    # 28x28, MNIST and Fashion-MNIST: 7x7 -> 14x14 -> 28x28.
    "28": [(4, 7, 1, 0), (2, 4, 2, 1), (0, 4, 2, 1)],
    # 32x32, SVHN (Table 5 top): 4x4 -> 8x8 -> 16x16 -> 32x32.
    "32": [(8, 4, 1, 0), (4, 4, 2, 1), (2, 4, 2, 1), (0, 4, 2, 1)],
    # 64x64, CelebA (Table 5 middle): 4 -> 8 -> 16 -> 32 -> 64.
    "64": [(8, 4, 1, 0), (4, 4, 2, 1), (2, 4, 2, 1), (1, 4, 2, 1), (0, 4, 2, 1)],
    # 128x128, CelebA-HQ (Appendix C: "a larger generator", layers not given): the 64x64 family
    # with one more stride-2 layer at 8 ngf, 4 -> 8 -> 16 -> 32 -> 64 -> 128 (our choice).
    "128": [(8, 4, 1, 0), (8, 4, 2, 1), (4, 4, 2, 1), (2, 4, 2, 1), (1, 4, 2, 1), (0, 4, 2, 1)],
    # 32x32 CIFAR-10 (Table 5 bottom): 8 -> 16 -> 32, then a 3x3 stride-1 output layer.
    "cifar10": [(8, 8, 1, 0), (4, 4, 2, 1), (2, 4, 2, 1), (0, 3, 1, 1)],
}


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every linear and (transposed) conv layer."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """``g(z)``: latent ``(B, nz)`` to image ``(B, C, H, W)`` in ``[-1, 1]``.

    Arguments:
        nz: latent dimension.
        ngf: base width.
        channels: image channels C.
        size: image size H = W (8, 28, 32, 64 or 128).
        arch: ``"auto"`` picks the family by ``size``; ``"cifar10"`` the CIFAR-10 one.
    """

    def __init__(self, nz: int, ngf: int, channels: int, size: int, arch: str = "auto") -> None:
        super().__init__()
        key = str(size) if arch == "auto" else arch
        if key not in GENERATOR_FAMILIES:
            known = ", ".join(k for k in GENERATOR_FAMILIES if k.isdigit())
            raise ValueError(f"no generator for {size}x{size} images (sizes: {known})")
        layers: list[nn.Module] = []
        c_in = nz
        specs = GENERATOR_FAMILIES[key]
        for i, (mult, k, s, p) in enumerate(specs):
            c_out = mult * ngf if mult else channels
            layers.append(nn.ConvTranspose2d(c_in, c_out, k, s, p))
            layers.append(nn.Tanh() if i == len(specs) - 1 else nn.LeakyReLU(0.2))
            c_in = c_out
        self.net = nn.Sequential(*layers)
        self.nz = nz
        xavier_init(self)
        # Channels-last weights: oneDNN's and cuDNN's fast convolution layouts. On the 2-core
        # CPU a training iteration of the svhn preset ran 7-10% faster in float32 and 3-20% in
        # bf16 (interleaved in one process). Values and state-dict keys are unchanged.
        self.to(memory_format=torch.channels_last)
        out = self.net(torch.zeros(1, nz, 1, 1)).shape[-1]
        if out != size:
            raise ValueError(f"generator family '{key}' makes {out}x{out} images, not {size}")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, nz)`` -> ``(B, C, H, W)``."""
        return self.net(z[:, :, None, None])


class Encoder(nn.Module):
    """``x -> (mu, log sigma)``: image ``(B, C, H, W)`` to two ``(B, nz)`` tensors, the mean and
    log standard deviation of a diagonal Gaussian over ``z`` (the amortised posterior start).

    The mirror of :class:`Generator` (same arguments): convolutions with the kernels, strides
    and paddings of the generator's transposed convolutions in reverse order, which map the
    image back to ``1 x 1`` exactly, with LeakyReLU(0.2) between them and ``2 nz`` output
    channels. The output layer starts at zero, so an untrained encoder gives ``N(0, I)``: the
    paper's noise start.
    """

    def __init__(self, nz: int, ngf: int, channels: int, size: int, arch: str = "auto") -> None:
        super().__init__()
        specs = GENERATOR_FAMILIES[str(size) if arch == "auto" else arch]
        widths = [nz] + [mult * ngf if mult else channels for mult, *_ in specs]  # generator's
        layers: list[nn.Module] = []
        for i in reversed(range(len(specs))):
            _, k, s, p = specs[i]
            layers.append(nn.Conv2d(widths[i + 1], 2 * nz if i == 0 else widths[i], k, s, p))
            layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers[:-1])
        self.nz = nz
        xavier_init(self)
        nn.init.zeros_(self.net[-1].weight)
        self.to(memory_format=torch.channels_last)
        out = self.net(torch.zeros(1, channels, size, size)).shape[-1]
        if out != 1:
            raise ValueError(f"encoder of {size}x{size} images ends at {out}x{out}, not 1x1")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` -> ``mu``, ``log sigma``, each ``(B, nz)``."""
        mu, log_sigma = self.net(x).flatten(1).chunk(2, dim=1)
        return mu, log_sigma


class RatioNet(nn.Module):
    """``f(z) = log r(z)``: ``(B, nz)`` -> ``(B,)`` (paper Table 4, LeakyReLU slope 0.1)."""

    def __init__(self, nz: int, hidden: int = 200) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(nz, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, 1),
        )
        xavier_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, nz)`` -> ``(B,)``."""
        return self.net(z).squeeze(-1)
