"""RIFE 4.6 (Practical-RIFE's IFNet, Huang et al., ECCV 2022): the learned frame interpolator's network.

Written here because no maintained pip package ships it as a plain ``nn.Module`` (RIFE is distributed as
research scripts). The module and parameter names follow the published 4.6 checkpoints
(``block0.conv0.0.0.weight`` ... ``block3.lastconv.0.bias``, ``convblock.N.beta``), so the real weights load
with ``load_state_dict(strict=True)`` and nothing is renamed.

The network estimates, coarse to fine over four scales (1/8, 1/4, 1/2, 1), the flows from the wanted moment
``timestep`` (0..1 between two frames) back to each frame plus a blending mask, then warps both frames
there and blends them. It is arbitrary-timestep: one call per in-between frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Each block works at 1/scale of the frame and halves it twice more inside; sides are padded to this.
PAD_MULTIPLE = 64
SCALES = (8, 4, 2, 1)
# (input channels, width) of the four blocks: the first sees both frames and the timestep (3 + 3 + 1); the
# others also the previous mask (1) and the warped frames, plus the flow (4) concatenated inside the block.
BLOCKS = ((7, 192), (12, 128), (12, 96), (12, 64))


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=True), nn.LeakyReLU(0.2, True)
    )


class ResConv(nn.Module):
    """A 3x3 convolution with a learned per-channel scale ``beta`` on a residual path."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones((1, channels, 1, 1)))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.conv(x) * self.beta + x)
        return out


class IFBlock(nn.Module):
    """One scale of the coarse-to-fine estimate: (flow update, mask update) from the inputs at 1/scale."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_channels, width // 2, 2), _conv(width // 2, width, 2))
        self.convblock = nn.Sequential(*(ResConv(width) for _ in range(8)))
        # 4 flow channels + 1 mask channel (+1 unused) at twice the resolution, then PixelShuffle to 4x.
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 4 * 6, 4, 2, 1), nn.PixelShuffle(2))

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor | None, scale: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, flow), 1)
        features = self.convblock(self.conv0(x))
        out = F.interpolate(self.lastconv(features), scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5]


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at each pixel + ``flow`` (in pixels), bilinear, borders extended (RIFE's backwarp)."""
    batch, _, height, width = flow.shape
    xs = torch.linspace(-1.0, 1.0, width, device=flow.device, dtype=flow.dtype)
    ys = torch.linspace(-1.0, 1.0, height, device=flow.device, dtype=flow.dtype)
    grid = torch.stack(
        (
            xs.view(1, 1, width).expand(batch, height, width),
            ys.view(1, height, 1).expand(batch, height, width),
        ),
        dim=-1,
    )
    offset = torch.stack((flow[:, 0] / ((width - 1.0) / 2.0), flow[:, 1] / ((height - 1.0) / 2.0)), dim=-1)
    return F.grid_sample(image, grid + offset, mode="bilinear", padding_mode="border", align_corners=True)


class IFNet(nn.Module):
    """RIFE 4.6: ``forward(frame0, frame1, timestep)`` -> the frame at ``timestep`` between them.

    Frames are (batch, 3, H, W) floats in [0, 1] of any size (padded to PAD_MULTIPLE inside); ``timestep`` is
    a float or a (batch,) tensor, 0 = frame0 and 1 = frame1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.block0 = IFBlock(*BLOCKS[0])
        self.block1 = IFBlock(*BLOCKS[1])
        self.block2 = IFBlock(*BLOCKS[2])
        self.block3 = IFBlock(*BLOCKS[3])

    def forward(
        self, frame0: torch.Tensor, frame1: torch.Tensor, timestep: float | torch.Tensor
    ) -> torch.Tensor:
        _, _, height, width = frame0.shape
        padding = (0, -width % PAD_MULTIPLE, 0, -height % PAD_MULTIPLE)
        img0 = F.pad(frame0.clamp(0, 1), padding)
        img1 = F.pad(frame1.clamp(0, 1), padding)
        t = torch.as_tensor(timestep, dtype=img0.dtype, device=img0.device).reshape(-1, 1, 1, 1)
        t = t.expand(img0.shape[0], 1, img0.shape[2], img0.shape[3])

        flow: torch.Tensor | None = None
        mask = torch.zeros_like(t)
        warped0, warped1 = img0, img1
        for block, scale in zip((self.block0, self.block1, self.block2, self.block3), SCALES, strict=True):
            if flow is None:
                flow, mask = block(torch.cat((img0, img1, t), 1), None, scale)
            else:
                flow_update, mask_update = block(torch.cat((warped0, warped1, t, mask), 1), flow, scale)
                flow, mask = flow + flow_update, mask + mask_update
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        merged = warped0 * weight + warped1 * (1 - weight)
        return merged[:, :, :height, :width]


def parameter_count() -> int:
    """Parameters of the 4.6 network (about 5.1 million): the planner's weight size, without building it."""
    total = 0
    for in_channels, width in BLOCKS:
        half = width // 2
        total += in_channels * half * 9 + half + half * width * 9 + width  # conv0
        total += 8 * (width * width * 9 + width + width)  # convblock: conv + beta
        total += width * 24 * 16 + 24  # lastconv
    return total
