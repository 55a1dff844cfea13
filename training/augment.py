"""Training-time augmentation for field photos, applied to the cached uint8 model-size images.

Field photos vary in distance to the plant, framing, hand-held tilt and light (sun, overcast,
shade), while "up" stays up. So: random crops of 55-100 % of the frame resized back, horizontal
flips (never vertical), a few degrees of rotation, and brightness/contrast/saturation/hue jitter.
Evaluation applies none of this: it scores exactly what the service sees.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def field_photo_augmentation(size: int) -> v2.Compose:
    """uint8 (3, S, S) tensor -> augmented uint8 (3, size, size) tensor."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.55, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.RandomRotation(10)], p=0.3),
        v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.03),
        v2.ToDtype(torch.uint8),
    ])
