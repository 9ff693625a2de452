"""torch modules of the vision families. Importing this module imports torch: only do it lazily.

EfficientNet-Lite0 block layout (input stride in brackets): blocks 0 (2), 1-2 (4), 3-4 (8), 5-7 and
8-10 (16), 11-14 and 15 (32), then the 1x1 head conv to 1280 channels. ``TAPS`` names the block after
which each stride's features are final.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

#: stride -> (index of the last block at that stride, channels)
TAPS: dict[int, tuple[int, int]] = {8: (4, 40), 16: (10, 112), 32: (15, 320)}


class Pooled(nn.Module):
    """Image (N, 3, S, S) -> global-average-pooled penultimate features (N, 1280)."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


class Trunk(nn.Module):
    """The backbone up to a block, returning the features after the given blocks (for detection).

    ``start``: run from this block on (the input is then the output of block ``start - 1``), so that a
    frozen lower part can be computed once and cached while the upper part is trained.
    """

    def __init__(self, net: Any, outs: tuple[int, ...], start: int = 0, stop: int | None = None) -> None:
        super().__init__()
        last = max(outs) if stop is None else stop
        self.start = start
        self.outs = outs
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish) if start == 0 else None
        self.blocks = nn.ModuleList(net._blocks[start : last + 1])
        self.n_blocks = len(net._blocks)
        self.drop_connect = float(net._global_params.drop_connect_rate or 0.0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.stem is not None:
            x = self.stem(x)
        found: list[torch.Tensor] = []
        for offset, block in enumerate(self.blocks):
            idx = self.start + offset
            rate = self.drop_connect * idx / self.n_blocks if self.drop_connect else None
            x = block(x, drop_connect_rate=rate)
            if idx in self.outs:
                found.append(x)
        return found


class TapsNet(nn.Module):
    """Image -> (stride-16 features after block 10, stride-32 features after block 15): the detector's inputs."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.trunk = Trunk(net, outs=(TAPS[16][0], TAPS[32][0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c4, c5 = self.trunk(x)
        return c4, c5


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class CenterHead(nn.Module):
    """A CenterNet/TTFNet-style head on frozen stride-16 and stride-32 backbone features.

    The stride-32 map is projected, upsampled and added to the projected stride-16 map (a two-level FPN);
    from that stride-16 map come a per-class centre heatmap (logits) and, per location, the distances to
    the box's left/top/right/bottom edges in input pixels (``exp`` keeps them positive and starts them at
    two cells).
    """

    def __init__(self, n_classes: int, channels: int = 64, c4: int = TAPS[16][1], c5: int = TAPS[32][1],
                 stride: int = 16) -> None:
        super().__init__()
        self.stride = stride
        self.lat5 = conv_bn_relu(c5, channels, 1)
        self.lat4 = conv_bn_relu(c4, channels, 1)
        self.merge = conv_bn_relu(channels, channels)
        self.heat = nn.Sequential(conv_bn_relu(channels, channels), nn.Conv2d(channels, n_classes, 1))
        self.box = nn.Sequential(conv_bn_relu(channels, channels), nn.Conv2d(channels, 4, 1))
        nn.init.constant_(self.heat[-1].bias, -2.19)  # prior probability 0.1
        nn.init.zeros_(self.box[-1].bias)

    def forward(self, c4: torch.Tensor, c5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = F.interpolate(self.lat5(c5), size=c4.shape[-2:], mode="nearest")
        x = self.merge(self.lat4(c4) + top)
        ltrb = torch.exp(self.box(x).clamp(max=8.0)) * (2.0 * self.stride)
        return self.heat(x), ltrb


class DecodedHead(nn.Module):
    """A :class:`CenterHead` plus decoding: (heatmap probabilities, box corners relative to the image)."""

    def __init__(self, head: CenterHead, size: int) -> None:
        super().__init__()
        self.head = head
        self.size = float(size)
        g = size // head.stride
        ys, xs = torch.meshgrid(torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32),
                                indexing="ij")
        self.register_buffer("cx", (xs + 0.5) * head.stride, persistent=False)
        self.register_buffer("cy", (ys + 0.5) * head.stride, persistent=False)

    def forward(self, c4: torch.Tensor, c5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, ltrb = self.head(c4, c5)
        corners = torch.stack(
            [self.cx - ltrb[:, 0], self.cy - ltrb[:, 1], self.cx + ltrb[:, 2], self.cy + ltrb[:, 3]], dim=1
        )
        return torch.sigmoid(logits), corners / self.size
