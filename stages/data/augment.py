"""Batched SimCLR augmentations: a whole `B x 3 x H x W` batch at once, on whatever device it sits on.

Every sample gets its own random parameters, drawn from an optional seeded `torch.Generator` (same seed, same
output). No step reads a value back to the host, so a GPU batch is augmented without synchronisation. A process
that augments its shard of a larger batch passes a `ShardedGenerator`: the parameters are drawn for the whole batch
and sliced, so N processes together apply exactly the augmentations one process would apply to the whole batch.

Follows the official SimCLRv2 TF code (docs/simclrv2.md#pretraining-augmentations):
- random resized crop (area 0.08-1, aspect 3/4-4/3) and horizontal flip, done together as one bicubic resampling
  (`grid_sample`) of the crop box;
- colour jitter with p=0.8: multiplicative brightness, per-channel contrast, HSV saturation and HSV hue, in a random
  order per sample, clipping to [0, 1] after each op; strengths 0.8*s, 0.8*s, 0.8*s, 0.2*s;
- grayscale with p=0.2 (TF luma weights);
- Gaussian blur with p=0.5, kernel ~10% of the image side, sigma U(0.1, 2), zero "SAME" padding as in TF.
Resampling does not anti-alias; crops are upsampled or kept near their size in practice, where this does not matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stages.models.resnet import check_image_batch

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; float batches pass through unchanged."""
    check_image_batch(images, "images")
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point in [0, 1], got dtype {images.dtype}")
    return images


@dataclass(frozen=True)
class ShardedGenerator:
    """Randomness for rows `start ... start + n` of a batch of `total` rows: every draw is made for all `total` rows
    from `generator` and this shard's rows are kept."""

    generator: torch.Generator
    start: int
    total: int


Random = torch.Generator | ShardedGenerator | None


def _rand(shape: tuple[int, ...], generator: Random, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) of `shape` (batch first), drawn on the generator's device, then moved to the batch's device."""
    if isinstance(generator, ShardedGenerator):
        whole = torch.rand(
            (generator.total, *shape[1:]), generator=generator.generator, device=generator.generator.device
        )
        return whole[generator.start : generator.start + shape[0]].to(device, non_blocking=True)
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device, non_blocking=True)


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: Random, device: torch.device) -> torch.Tensor:
    return low + (high - low) * _rand(shape, generator, device)


# --- crop, flip, resize -------------------------------------------------------------------------------------------


def random_resized_crop_boxes(
    images: torch.Tensor,
    generator: Random = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """Per-sample crop boxes `B x 4` (x0, y0, w, h) in pixels for a batch of equally sized images."""
    batch, height, width, device = images.shape[0], images.shape[-2], images.shape[-1], images.device
    heights = torch.full((batch,), float(height), device=device)
    widths = torch.full((batch,), float(width), device=device)
    return crop_boxes(heights, widths, generator, scale, ratio, attempts)


def crop_boxes(
    heights: torch.Tensor,
    widths: torch.Tensor,
    generator: Random = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> torch.Tensor:
    """Crop boxes `B x 4` (x0, y0, w, h) in pixels for images of the given (float) sizes, as torchvision's
    RandomResizedCrop samples them: the first of `attempts` (area, log-aspect) draws that fits, else the largest
    centred box within `ratio`. The draws do not depend on the sizes, so a shard's rows stay those of the batch."""
    batch, device = heights.shape[0], heights.device
    area = (heights * widths).unsqueeze(1) * _uniform((batch, attempts), *scale, generator, device)
    aspect = torch.exp(_uniform((batch, attempts), math.log(ratio[0]), math.log(ratio[1]), generator, device))
    w, h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (w <= widths.unsqueeze(1)) & (h <= heights.unsqueeze(1))
    first = fits.float().argmax(dim=1, keepdim=True)  # index of the first fitting attempt (0 if none fits)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(dim=1)

    image_ratio = widths / heights
    fallback_w = torch.where(image_ratio <= ratio[1], widths, heights * ratio[1])
    fallback_h = torch.where(image_ratio >= ratio[0], heights, widths / ratio[0])
    w, h = torch.where(found, w, fallback_w), torch.where(found, h, fallback_h)
    position = torch.where(found.unsqueeze(1), _rand((batch, 2), generator, device), 0.5)  # fallback: centred
    x0, y0 = (widths - w) * position[:, 0], (heights - h) * position[:, 1]
    return torch.stack([x0, y0, w, h], dim=1)


def center_crop_boxes(images: torch.Tensor, proportion: float = 0.875) -> torch.Tensor:
    """The centred square box covering `proportion` of the shorter side (the reference's evaluation crop)."""
    batch, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    side = proportion * min(height, width)
    box = [(width - side) / 2, (height - side) / 2, side, side]
    # Built on the device from Python floats: a tensor copied from host memory would synchronise.
    return torch.stack([torch.full((batch,), value, device=images.device) for value in box], dim=1)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Bicubic resampling of each sample's box to `size x size`, mirrored where `flip` is True."""
    height, width = images.shape[-2], images.shape[-1]
    x0, y0, w, h = boxes.to(images.dtype).unbind(dim=1)
    sign = 1 - 2 * flip.to(images.dtype) if flip is not None else torch.ones_like(w)
    theta = torch.zeros(images.shape[0], 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = sign * w / width
    theta[:, 0, 2] = (2 * x0 + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * y0 + h) / height - 1
    grid = F.affine_grid(theta, [images.shape[0], 3, size, size], align_corners=False)
    out = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0, 1)  # bicubic overshoots


# --- colour --------------------------------------------------------------------------------------------------------


def _value_chroma_hue(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = images.unbind(dim=1)
    value = images.amax(dim=1)
    chroma = value - images.amin(dim=1)
    safe = torch.where(chroma > 0, chroma, 1.0)
    hue = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    return value, chroma, torch.where(chroma > 0, (hue / 6) % 1, 0.0)


def _rgb_from(value: torch.Tensor, chroma: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB: channel n in (5, 3, 1) for (R, G, B) is v - chroma*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6."""
    n = torch.arange(5, 0, -2, dtype=value.dtype, device=value.device).view(1, 3, 1, 1)  # made on the device: no copy
    k = (n + 6 * hue.unsqueeze(1)) % 6
    return value.unsqueeze(1) - chroma.unsqueeze(1) * torch.minimum(k, 4 - k).clamp_(0, 1)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (images * _per_sample(factor)).clamp_(0, 1)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = images.mean(dim=(2, 3), keepdim=True)  # per channel, as tf.image.adjust_contrast
    return ((images - mean) * _per_sample(factor) + mean).clamp_(0, 1)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """HSV saturation scaling, clipped to [0, 1], without the HSV round trip.

    With hue and value fixed every channel is affine in saturation: c = v - (v - c0) * s / s0. Scaling s by f and
    clipping at 1 is therefore c' = v - (v - c) * min(f, 1 / s) = v - (v - c) * min(f, v / chroma).
    """
    value = images.amax(dim=1, keepdim=True)
    chroma = value - images.amin(dim=1, keepdim=True)
    scale = torch.minimum(_per_sample(factor), value / chroma.clamp_min(1e-12))
    return (value - (value - images) * scale).clamp_(0, 1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by `shift` (in turns, per sample); saturation and value stay."""
    value, chroma, hue = _value_chroma_hue(images)
    return _rgb_from(value, chroma, (hue + shift.view(-1, 1, 1)) % 1).clamp_(0, 1)


def color_jitter(images: torch.Tensor, strength: float, generator: Random = None, p: float = 0.8) -> torch.Tensor:
    """SimCLR colour jitter with probability `p`: the four ops in a random order per sample.

    All samples go through four rounds; in each round a sample's scheduled op gets its random factor and the other
    ops get identity factors, which keeps per-sample random order without splitting the batch.
    """
    if strength < 0:
        raise ValueError(f"strength must be >= 0 (1.0 ImageNet, 0.5 CIFAR), got {strength!r}")
    batch, device = images.shape[0], images.device
    applied = _rand((batch,), generator, device) < p
    spread = 0.8 * strength
    factors = _uniform((batch, 3), max(1 - spread, 0), 1 + spread, generator, device).T
    factors = torch.where(applied, factors, torch.ones_like(factors))  # brightness, contrast, saturation
    hue = torch.where(applied, _uniform((batch,), -0.2 * strength, 0.2 * strength, generator, device), 0.0)
    order = _rand((batch, 4), generator, device).argsort(dim=1)  # a random permutation of the 4 ops per sample
    ones = torch.ones(batch, dtype=images.dtype, device=device)
    for position in range(4):
        op = order[:, position]
        images = adjust_brightness(images, torch.where(op == 0, factors[0], ones))
        images = adjust_contrast(images, torch.where(op == 1, factors[1], ones))
        images = adjust_saturation(images, torch.where(op == 2, factors[2], ones))
        images = adjust_hue(images, torch.where(op == 3, hue, ones - 1))
    return images


def random_grayscale(images: torch.Tensor, generator: Random = None, p: float = 0.2) -> torch.Tensor:
    red, green, blue = images.unbind(dim=1)
    gray = (GRAY_WEIGHTS[0] * red + GRAY_WEIGHTS[1] * green + GRAY_WEIGHTS[2] * blue).unsqueeze(1).expand_as(images)
    chosen = _per_sample(_rand((images.shape[0],), generator, images.device) < p)
    return torch.where(chosen, gray, images)


def random_gaussian_blur(
    images: torch.Tensor,
    generator: Random = None,
    p: float = 0.5,
    sigma: tuple[float, float] = (0.1, 2.0),
) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma; unblurred samples get a delta kernel."""
    batch, channels, height, width = images.shape
    radius = max(height // 10, 1) // 2
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    sigmas = _uniform((batch, 1), *sigma, generator, images.device).to(images.dtype)
    kernels = torch.exp(-(offsets**2) / (2 * sigmas**2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    blurred = _rand((batch, 1), generator, images.device) < p
    kernels = torch.where(blurred, kernels, (offsets == 0).to(images.dtype))
    weight = kernels.repeat_interleave(channels, dim=0)  # (B*3) x K, one depthwise filter per sample channel
    # channels_last makes this depthwise conv ~2x faster on CPU.
    flat = images.reshape(1, batch * channels, height, width).contiguous(memory_format=torch.channels_last)
    flat = F.conv2d(flat, weight.view(-1, 1, 1, 2 * radius + 1), padding=(0, radius), groups=batch * channels)
    flat = F.conv2d(flat, weight.view(-1, 1, 2 * radius + 1, 1), padding=(radius, 0), groups=batch * channels)
    return flat.reshape(batch, channels, height, width).contiguous()


# --- pipelines -----------------------------------------------------------------------------------------------------


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer (output side in pixels), got {size!r}")


@dataclass(frozen=True)
class SimCLRAugment:
    """The pretraining view: crop + flip, colour jitter (p 0.8) + grayscale (p 0.2), optional blur (p 0.5).

    `color_strength` 1.0 and `blur=True` for ImageNet; 0.5 and `blur=False` for CIFAR.
    """

    size: int
    color_strength: float = 1.0
    blur: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)

    def __post_init__(self) -> None:
        _check_size(self.size)
        if self.color_strength < 0:
            raise ValueError(f"color_strength must be >= 0, got {self.color_strength!r}")

    def __call__(self, images: torch.Tensor, generator: Random = None) -> torch.Tensor:
        images = to_float_images(images)
        boxes = random_resized_crop_boxes(images, generator, scale=self.crop_scale)
        flip = _rand((images.shape[0],), generator, images.device) < 0.5
        return self.appearance(crop_resize(images, boxes, self.size, flip), generator)

    def from_crops(self, crops: torch.Tensor, generator: Random = None) -> torch.Tensor:
        """Views from crops already cut and resized to `size` (by the data loader's workers): flip, then the rest."""
        crops = to_float_images(crops)
        if crops.shape[-2:] != (self.size, self.size):
            raise ValueError(f"crops must be {self.size} x {self.size}, got {tuple(crops.shape[-2:])}")
        flip = _per_sample(_rand((crops.shape[0],), generator, crops.device) < 0.5)
        return self.appearance(torch.where(flip, crops.flip(-1), crops), generator)

    def appearance(self, views: torch.Tensor, generator: Random = None) -> torch.Tensor:
        """Colour jitter, grayscale and (optionally) blur of float views."""
        views = random_grayscale(color_jitter(views, self.color_strength, generator), generator)
        return random_gaussian_blur(views, generator) if self.blur else views


@dataclass(frozen=True)
class CropFlipAugment:
    """Fine-tuning, linear evaluation and distillation: random resized crop + horizontal flip only."""

    size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)

    def __post_init__(self) -> None:
        _check_size(self.size)

    def __call__(self, images: torch.Tensor, generator: Random = None) -> torch.Tensor:
        images = to_float_images(images)
        boxes = random_resized_crop_boxes(images, generator, scale=self.crop_scale)
        flip = _rand((images.shape[0],), generator, images.device) < 0.5
        return crop_resize(images, boxes, self.size, flip)

    def from_crops(self, crops: torch.Tensor, generator: Random = None) -> torch.Tensor:
        """Views from crops already cut and resized to `size` (by the data loader's workers): the flip alone."""
        crops = to_float_images(crops)
        if crops.shape[-2:] != (self.size, self.size):
            raise ValueError(f"crops must be {self.size} x {self.size}, got {tuple(crops.shape[-2:])}")
        flip = _per_sample(_rand((crops.shape[0],), generator, crops.device) < 0.5)
        return torch.where(flip, crops.flip(-1), crops)


EVAL_CROP_PROPORTION = 0.875  # the reference's evaluation crop for images larger than SMALL_IMAGE_SIDE
SMALL_IMAGE_SIDE = 32  # at this side or less the reference evaluates the whole image (official tf2/data.py)


def evaluation_crop_proportion(size: int) -> float:
    """The share of the shorter side the evaluation crop keeps for views of `size` pixels."""
    return 1.0 if size <= SMALL_IMAGE_SIDE else EVAL_CROP_PROPORTION


@dataclass(frozen=True)
class CenterCrop:
    """Evaluation: centre crop of `proportion` of the shorter side, resized to `size`. `CenterCrop.for_evaluation`
    takes the reference's proportion for the size."""

    size: int
    proportion: float = 0.875

    def __post_init__(self) -> None:
        _check_size(self.size)
        if not 0 < self.proportion <= 1:
            raise ValueError(f"proportion must be in (0, 1], got {self.proportion!r}")

    @classmethod
    def for_evaluation(cls, size: int) -> CenterCrop:
        return cls(size, evaluation_crop_proportion(size))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = to_float_images(images)
        return crop_resize(images, center_crop_boxes(images, self.proportion), self.size)
