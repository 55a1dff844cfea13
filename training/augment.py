"""Training-time augmentation for field photos, done per batch on the device.

Field photos vary in distance to the plant, framing, hand-held tilt and light (sun, overcast,
shade), while "up" stays up. So each image gets its own random crop of 55-100 % of the frame
(aspect 3:4 to 4:3) resized back, a horizontal flip half the time (never vertical), a few
degrees of rotation a third of the time, and brightness/contrast/saturation jitter. Hue is left
alone: the colour of leaves and umbels is part of the evidence.

Why per batch: crop, flip and rotation are one affine map per image, so a whole batch is
resampled by a single ``grid_sample`` call and jittered by broadcasting. Per-image torchvision
transforms measured 15-45 ms per image on this 2-core CPU, as much as the training step itself;
the batched version costs well under 1 ms per image and runs on the GPU when there is one.
Evaluation applies none of this: it scores exactly what the service sees.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CROP_AREA = (0.55, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
ROTATION_DEGREES = 10.0
ROTATION_P = 0.3
JITTER = 0.25  # brightness, contrast and saturation factors drawn from [1 - J, 1 + J]


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    shard: tuple[int, int] = (0, 1),
    aerial: bool = False,
) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> augmented float (N, 3, S, S) in [0, 255], same device.

    ``shard=(r, W)``: ``images`` are rows r, r+W, ... of a global batch of N*W images (one DDP
    rank's share). Random numbers are drawn for the whole global batch and these rows kept, so
    W ranks augment their shares exactly as one process augments the global batch.
    ``aerial``: also a vertical flip and a transpose half the time each (with the horizontal flip:
    any of the 8 flips and quarter turns), for photos taken straight down.
    """
    n, _, h, w = images.shape
    rank, world = shard
    x = images.float()

    def rand() -> torch.Tensor:
        return torch.rand(n * world, generator=generator)[rank::world]

    def uniform(low: float, high: float) -> torch.Tensor:
        return rand() * (high - low) + low

    area = uniform(*CROP_AREA)
    log_ratio = uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    crop_w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)
    crop_h = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
    centre_x = (rand() * 2 - 1) * (1 - crop_w)
    centre_y = (rand() * 2 - 1) * (1 - crop_h)
    flip = torch.where(rand() < 0.5, -1.0, 1.0)
    angle = uniform(-ROTATION_DEGREES, ROTATION_DEGREES) * math.pi / 180
    angle = torch.where(rand() < ROTATION_P, angle, 0.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output pixel (u, v) in [-1, 1]^2 samples input (x, y) = centre + R(angle) diag(w, h) D (u, v)
    # with D = diag(flip, 1) (field), or any flip or quarter turn (aerial).
    zero = torch.zeros_like(flip)
    d00, d01, d10, d11 = flip, zero, zero, torch.ones_like(flip)
    if aerial:
        d11 = torch.where(rand() < 0.5, -1.0, 1.0)
        swap = rand() < 0.5
        d00, d01, d10, d11 = (torch.where(swap, zero, d00), torch.where(swap, d11, zero),
                              torch.where(swap, d00, zero), torch.where(swap, zero, d11))
    theta = torch.stack([
        torch.stack([cos * crop_w * d00 - sin * crop_h * d10,
                     cos * crop_w * d01 - sin * crop_h * d11, centre_x], dim=1),
        torch.stack([sin * crop_w * d00 + cos * crop_h * d10,
                     sin * crop_w * d01 + cos * crop_h * d11, centre_y], dim=1),
    ], dim=1).to(x.device)
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def factor() -> torch.Tensor:
        return uniform(1 - JITTER, 1 + JITTER).to(x.device).view(n, 1, 1, 1)

    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = gray + (x - gray) * factor()  # saturation
    mean = gray.mean(dim=(2, 3), keepdim=True)
    x = mean + (x - mean) * factor()  # contrast
    x = x * factor()  # brightness
    return x.clamp_(0.0, 255.0)
