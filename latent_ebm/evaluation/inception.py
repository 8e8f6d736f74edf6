"""The FID Inception-v3 network: the TF-ported ``pt_inception-2015-12-05`` variant.

FID tools compute features with the Inception-v3 graph of TensorFlow's 2015-12-05 release,
ported to PyTorch. That graph differs from the usual Inception-v3 (Szegedy et al. 2016) in
three places, reproduced here so that its weights file loads with ``strict=True``:

- the pool branch of every A, C and the first E block averages over the valid pixels only
  (``avg_pool2d(3, 1, 1, count_include_pad=False)``);
- the pool branch of the last E block (``Mixed_7c``) is a 3x3 *max* pool;
- the classifier ``fc`` has 1008 outputs (2048 -> 1008), and there is no auxiliary head.

Every convolution is bias-free and followed by BatchNorm (eps 0.001) and ReLU. Module names
match the weights file's state-dict keys (``Conv2d_1a_3x3.conv.weight``,
``Mixed_7c.branch3x3dbl_3a.bn.running_var``, ``fc.weight``, ...). The network expects
``(B, 3, 299, 299)`` inputs in ``[-1, 1]``; :meth:`FIDInceptionV3.forward` returns the 2048-d
pool-3 features (global average of ``Mixed_7c``), the FID features.
:func:`load_fid_inception` builds it from the weights file and checks the file's layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latent_ebm.errors import LatentEBMError
from latent_ebm.files import WeightsFileError, load_weights

__all__ = ["FID_INCEPTION_PARAMETERS", "INCEPTION_FILE", "FIDInceptionV3", "load_fid_inception"]

FID_INCEPTION_PARAMETERS = 23_850_960  # parameters of FIDInceptionV3, fc (2048 -> 1008) included
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # the usual FID weights file
_SOURCE = "the releases of the pytorch-fid project (https://github.com/mseitzer/pytorch-fid)"


class BasicConv2d(nn.Module):
    """Bias-free conv, BatchNorm (eps 0.001), ReLU: ``(B, c_in, H, W) -> (B, c_out, H', W')``."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average over valid pixels only (the TF graph's pool-branch pooling)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1; ``224 + pool_features`` channels."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2; ``c_in + 480`` channels."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (width ``c7``); 768 channels out."""

    def __init__(self, c_in: int, c7: int) -> None:
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of a 1x7 and a 7x1
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = BasicConv2d(c7, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, row[0], padding=row[1])
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2; ``c_in + 512``."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs; 2048 channels out.

    ``max_pool`` selects the pool branch's pooling: average over valid pixels (``Mixed_7b``)
    or 3x3 max pooling (``Mixed_7c``), as in the TF graph.
    """

    def __init__(self, c_in: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """FID Inception-v3: ``(B, 3, 299, 299)`` in ``[-1, 1]`` -> pool-3 features ``(B, 2048)``.

    ``fc`` (2048 -> 1008 ImageNet logits of the TF graph) is held only so that the weights file
    loads strictly; :meth:`forward` does not use it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)  # -> 147
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)  # max pool -> 73
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)  # -> 71, max pool -> 35
        self.Mixed_5b = InceptionA(192, pool_features=32)  # 256 channels
        self.Mixed_5c = InceptionA(256, pool_features=64)  # 288
        self.Mixed_5d = InceptionA(288, pool_features=64)  # 288
        self.Mixed_6a = InceptionB(288)  # 768, 17x17
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)  # 1280, 8x8
        self.Mixed_7b = InceptionE(1280, max_pool=False)  # 2048
        self.Mixed_7c = InceptionE(2048, max_pool=True)  # 2048
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 299, 299)`` in ``[-1, 1]`` -> ``(B, 2048)``."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return x.mean(dim=(2, 3))  # global average pool: the pool-3 features


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
    """:class:`FIDInceptionV3` with the weights of ``path`` (a state dict), loaded strictly.

    Raises:
        LatentEBMError: missing or unreadable file, or a state dict of another layout (the
            message lists the first missing, unexpected and mis-shaped keys).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LatentEBMError(
            f"Inception weights {path} not found; download the FID Inception weights "
            f"{INCEPTION_FILE} from {_SOURCE} and pass --weights PATH"
        )
    try:
        state = load_weights(path)  # weights_only: never runs code
    except (WeightsFileError, FileNotFoundError) as exc:  # truncated, foreign, refused
        reason = getattr(exc, "reason", "it vanished")
        raise LatentEBMError(
            f"could not read Inception weights {path} ({reason}); download {INCEPTION_FILE} "
            f"again from {_SOURCE}"
        ) from None
    if not isinstance(state, dict):
        raise LatentEBMError(f"{path} does not hold a state dict; expected {INCEPTION_FILE}")
    net = FIDInceptionV3()
    expected = net.state_dict()
    for key in expected:  # BatchNorm's step counter: unused in eval mode, absent from old files
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0)
    problems = {
        "missing keys": [k for k in expected if k not in state],
        "unexpected keys": [k for k in state if k not in expected],
        "keys of another shape": [
            k for k, v in expected.items() if k in state and _shape(state[k]) != v.shape
        ],
    }
    if any(problems.values()):
        parts = [
            f"{len(keys)} {label} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
            for label, keys in problems.items()
            if keys
        ]
        raise LatentEBMError(
            f"{path} is not the FID Inception-v3 state dict: {'; '.join(parts)}; use "
            f"{INCEPTION_FILE} from {_SOURCE}"
        )
    net.load_state_dict(state, strict=True)
    return net.eval()


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None
