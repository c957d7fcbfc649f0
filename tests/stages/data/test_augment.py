"""Batched SimCLR augmentations (stages/data/augment.py; docs/simclrv2.md#pretraining-augmentations)."""

import colorsys
import math

import pytest
import torch

from stages.data.augment import (
    GRAY_WEIGHTS,
    CenterCrop,
    CropFlipAugment,
    ShardedGenerator,
    SimCLRAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    crop_resize,
    random_gaussian_blur,
    random_grayscale,
    random_resized_crop_boxes,
)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(batch: int, height: int, width: int, seed: int = 0, low: float = 0.0, high: float = 1.0):
    return low + (high - low) * torch.rand(batch, 3, height, width, generator=seeded(seed))


def repeated(image: torch.Tensor, batch: int) -> torch.Tensor:
    """`batch` copies of one 3 x H x W image."""
    return image.unsqueeze(0).expand(batch, -1, -1, -1).contiguous()


def assert_near(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Same shape and max |actual - expected| <= atol (cheaper than torch.testing.assert_close's first call)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = (actual.double() - expected.double()).abs().max().item()
    assert error <= atol, f"max abs error {error:.3g} > {atol:g}"


def distinct_pairs(views: torch.Tensor, atol: float = 1e-4) -> bool:
    """True when no two samples of the batch are (nearly) equal."""
    flat = views.flatten(1)
    diffs = (flat[:, None] - flat[None]).abs().amax(dim=-1)
    off_diagonal = ~torch.eye(len(flat), dtype=torch.bool)
    return bool((diffs[off_diagonal] > atol).all())


PIPELINES = [
    SimCLRAugment(size=16),
    SimCLRAugment(size=16, color_strength=0.5, blur=False),
    CropFlipAugment(size=16),
]
PIPELINE_IDS = ["simclr-imagenet", "simclr-cifar", "crop-flip"]


# --- pipelines: shape, dtype, range -----------------------------------------------------------------------------------


@pytest.mark.parametrize("augment", PIPELINES, ids=PIPELINE_IDS)
@pytest.mark.parametrize("height,width", [(24, 24), (20, 36), (40, 18)])
def test_pipeline_float_input_shape_dtype_range(augment, height, width):
    images = random_images(5, height, width)
    views = augment(images, seeded(1))
    assert views.shape == (5, 3, 16, 16)
    assert views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1


@pytest.mark.parametrize("augment", PIPELINES, ids=PIPELINE_IDS)
@pytest.mark.parametrize("height,width", [(24, 24), (20, 36)])
def test_pipeline_uint8_input_shape_dtype_range(augment, height, width):
    images = torch.randint(0, 256, (4, 3, height, width), dtype=torch.uint8, generator=seeded(2))
    views = augment(images, seeded(3))
    assert views.shape == (4, 3, 16, 16)
    assert views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1


def test_uint8_and_float_inputs_agree():
    """uint8 [0, 255] is read as [0, 1]: the same picture in either dtype gives the same views."""
    images = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8, generator=seeded(4))
    augment = SimCLRAugment(size=12)
    from_uint8 = augment(images, seeded(5))
    from_float = augment(images.float() / 255, seeded(5))
    assert_near(from_uint8, from_float, atol=1e-5)


@pytest.mark.parametrize("height,width", [(32, 32), (24, 40)])
def test_center_crop_shape_dtype_range(height, width):
    images = torch.randint(0, 256, (3, 3, height, width), dtype=torch.uint8, generator=seeded(6))
    views = CenterCrop(size=16)(images)
    assert views.shape == (3, 3, 16, 16)
    assert views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1


# --- determinism and per-sample independence --------------------------------------------------------------------------


@pytest.mark.parametrize("augment", PIPELINES, ids=PIPELINE_IDS)
def test_same_seed_same_output_different_seed_different_output(augment):
    images = random_images(4, 20, 28)
    first = augment(images, seeded(7))
    again = augment(images, seeded(7))
    other = augment(images, seeded(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other, atol=1e-3)


@pytest.mark.parametrize("augment", PIPELINES, ids=PIPELINE_IDS)
def test_identical_samples_get_different_views(augment):
    images = repeated(random_images(1, 24, 24)[0], 6)
    views = augment(images, seeded(9))
    assert distinct_pairs(views)


def test_crop_boxes_differ_per_sample():
    images = repeated(random_images(1, 32, 32)[0], 8)
    boxes = random_resized_crop_boxes(images, seeded(10))
    assert boxes.shape == (8, 4)
    assert distinct_pairs(boxes, atol=1e-3)


def test_color_jitter_factors_differ_per_sample():
    images = repeated(random_images(1, 6, 6, low=0.2, high=0.8)[0], 6)
    jittered = color_jitter(images, strength=1.0, generator=seeded(11), p=1.0)
    assert distinct_pairs(jittered)


def test_blur_sigma_differs_per_sample():
    images = repeated(random_images(1, 40, 40)[0], 6)
    blurred = random_gaussian_blur(images, seeded(12), p=1.0)
    assert distinct_pairs(blurred, atol=1e-5)


def test_primitives_are_deterministic_under_a_seed():
    images = random_images(6, 30, 30, low=0.1, high=0.9)
    for op in (
        lambda g: color_jitter(images, 1.0, g),
        lambda g: random_grayscale(images, g, p=0.5),
        lambda g: random_gaussian_blur(images, g),
        lambda g: random_resized_crop_boxes(images, g),
    ):
        assert torch.equal(op(seeded(13)), op(seeded(13)))
        assert not torch.equal(op(seeded(13)), op(seeded(14)))


# --- crop / flip / resize ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(12, 12), (10, 14)])
def test_crop_resize_full_box_is_identity_and_flip_mirrors(height, width):
    images = random_images(3, height, width)
    full = torch.tensor([[0.0, 0.0, width, height]]).expand(3, 4)
    if height == width:
        same = crop_resize(images, full, size=height)
        assert_near(same, images, atol=1e-4)
        flipped = crop_resize(images, full, size=height, flip=torch.ones(3, dtype=torch.bool))
        assert_near(flipped, torch.flip(images, dims=[-1]), atol=1e-4)
    # Per-sample flags: only the flagged samples are mirrored.
    square = images[..., :height, :height]
    box = torch.tensor([[0.0, 0.0, height, height]]).expand(3, 4)
    mixed = crop_resize(square.contiguous(), box, size=height, flip=torch.tensor([True, False, True]))
    assert_near(mixed[0], square[0].flip(-1), atol=1e-4)
    assert_near(mixed[1], square[1], atol=1e-4)
    assert_near(mixed[2], square[2].flip(-1), atol=1e-4)


def test_crop_resize_takes_the_box():
    """A box over whole pixels at the output's resolution copies exactly those pixels."""
    images = random_images(2, 16, 20)
    boxes = torch.tensor([[3.0, 5.0, 8.0, 8.0], [10.0, 0.0, 8.0, 8.0]])
    crops = crop_resize(images, boxes, size=8)
    assert_near(crops[0], images[0, :, 5:13, 3:11], atol=1e-4)
    assert_near(crops[1], images[1, :, 0:8, 10:18], atol=1e-4)


def test_crop_resize_of_constant_image_is_constant():
    images = torch.full((2, 3, 10, 10), 0.3)
    boxes = torch.tensor([[1.3, 2.1, 5.5, 4.2], [0.0, 0.0, 10.0, 10.0]])
    assert_near(crop_resize(images, boxes, size=7), torch.full((2, 3, 7, 7), 0.3), atol=1e-5)


@pytest.mark.parametrize("height,width", [(32, 32), (24, 48), (48, 20)])
def test_random_resized_crop_boxes_inside_image_with_area_and_aspect(height, width):
    images = torch.zeros(500, 3, height, width)
    x0, y0, w, h = random_resized_crop_boxes(images, seeded(15)).unbind(dim=1)
    eps = 1e-4
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= width + eps).all() and (y0 + h <= height + eps).all()
    area = w * h / (height * width)
    assert (area > 0.08 - eps).all() and (area <= 1 + eps).all()
    if height == width:
        aspect = w / h
        assert (aspect >= 3 / 4 - eps).all() and (aspect <= 4 / 3 + eps).all()
        # The draws cover the range rather than sitting at one value (on a square image every area can fit).
        assert area.min() < 0.15 and area.max() > 0.9
        assert aspect.min() < 0.8 and aspect.max() > 1.25
    else:
        assert area.min() < 0.15 and area.max() > 0.4


def test_random_resized_crop_boxes_fallback_is_largest_centred_box():
    """With no fitting draw (area fraction forced to 1 on a 10 x 40 image, so h > 10 always), the box is the largest
    one within the aspect range (full height, width 4/3 of it), centred as the docstring and torchvision say."""
    images = torch.zeros(50, 3, 10, 40)
    x0, y0, w, h = random_resized_crop_boxes(images, seeded(16), scale=(1.0, 1.0)).unbind(dim=1)
    assert_near(h, torch.full_like(h, 10.0))
    assert_near(w, torch.full_like(w, 10 * 4 / 3))
    assert (x0 >= 0).all() and (x0 + w <= 40 + 1e-4).all()
    assert_near(y0, torch.zeros_like(y0))
    assert_near(x0, (40 - w) / 2)  # centred


def test_random_resized_crop_boxes_scale_one_on_square_image_is_full_image():
    images = torch.zeros(20, 3, 16, 16)
    boxes = random_resized_crop_boxes(images, seeded(17), scale=(1.0, 1.0))
    assert_near(boxes, torch.tensor([[0.0, 0.0, 16.0, 16.0]]).expand(20, 4), atol=1e-4)


# --- colour: adjust_* -------------------------------------------------------------------------------------------------


def test_adjust_brightness_scales_and_clips():
    images = torch.full((2, 3, 2, 2), 0.4)
    out = adjust_brightness(images, torch.tensor([0.5, 3.0]))
    assert_near(out[0], torch.full((3, 2, 2), 0.2))
    assert_near(out[1], torch.ones(3, 2, 2))


def test_adjust_contrast_uses_per_channel_mean():
    images = random_images(2, 5, 5, seed=20)
    mean = images.mean(dim=(2, 3), keepdim=True)
    out = adjust_contrast(images, torch.tensor([0.0, 1.0]))
    assert_near(out[0], mean[0].expand(3, 5, 5), atol=1e-6)
    assert_near(out[1], images[1], atol=1e-6)
    halved = adjust_contrast(images, torch.tensor([0.5, 0.5]))
    assert_near(halved, (images - mean) * 0.5 + mean, atol=1e-6)


def per_pixel_hsv(images: torch.Tensor) -> torch.Tensor:
    """`B x 3 x H x W` RGB -> HSV, pixel by pixel with Python's colorsys: the independent reference."""
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3).tolist()
    hsv = torch.tensor([colorsys.rgb_to_hsv(*p) for p in pixels], dtype=images.dtype)
    return hsv.view(images.shape[0], images.shape[2], images.shape[3], 3).permute(0, 3, 1, 2)


def via_hsv(images: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Reference: scale S (clipped to [0, 1]) and rotate H in HSV space, per sample, with colorsys."""
    batch, _, height, width = images.shape
    out = torch.empty_like(images)
    for i in range(batch):
        for y in range(height):
            for x in range(width):
                h, s, v = colorsys.rgb_to_hsv(*images[i, :, y, x].tolist())
                h, s = (h + float(hue[i])) % 1, min(max(s * float(saturation[i]), 0.0), 1.0)
                out[i, :, y, x] = torch.tensor(colorsys.hsv_to_rgb(h, s, v))
    return out.clamp(0, 1)


def test_adjust_saturation_matches_hsv_scaling():
    factors = torch.tensor([0.0, 0.3, 1.0, 1.6, 5.0])
    images = random_images(5, 6, 6, seed=46)
    images[:, :, 0, 0] = 0.4  # a gray pixel
    images[:, :, 0, 1] = 0.0  # a black one
    out = adjust_saturation(images, factors)
    assert_near(out, via_hsv(images, factors, torch.zeros(5)), atol=1e-5)
    assert_near(out[2], images[2], atol=1e-6)  # factor 1: identity
    assert_near(out[0], images[0].amax(dim=0, keepdim=True).expand(3, 6, 6), atol=1e-6)  # factor 0: gray at V


def test_adjust_hue_matches_hsv_rotation():
    shifts = torch.tensor([0.0, 0.1, -0.2, 0.5])
    images = random_images(4, 5, 5, seed=47)
    out = adjust_hue(images, shifts)
    assert_near(out, via_hsv(images, torch.ones(4), shifts), atol=1e-5)
    assert_near(out[0], images[0], atol=1e-5)  # shift 0: identity
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    rotated = adjust_hue(red, torch.tensor([1 / 3, 2 / 3]))
    assert_near(rotated[0], torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 2, 2))  # red -> green
    assert_near(rotated[1], torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 2, 2))  # red -> blue


def test_adjust_hue_leaves_saturation_and_value():
    images = random_images(3, 4, 4, seed=48)
    before, after = per_pixel_hsv(images), per_pixel_hsv(adjust_hue(images, torch.tensor([0.25, 0.6, -0.4])))
    assert_near(after[:, 1:], before[:, 1:], atol=1e-5)


# --- colour: jitter, grayscale ----------------------------------------------------------------------------------------


def test_color_jitter_strength_zero_is_identity():
    images = random_images(8, 7, 7, seed=21)
    assert_near(color_jitter(images, 0.0, seeded(22), p=1.0), images, atol=1e-5)


def test_color_jitter_p_zero_is_identity():
    images = random_images(8, 7, 7, seed=23)
    assert_near(color_jitter(images, 1.0, seeded(24), p=0.0), images, atol=1e-5)


def test_color_jitter_p_one_changes_every_sample_and_stays_in_range():
    images = random_images(16, 6, 6, seed=25, low=0.2, high=0.8)
    out = color_jitter(images, 1.0, seeded(26), p=1.0)
    assert ((out - images).abs().flatten(1).amax(dim=1) > 1e-3).all()
    assert out.min() >= 0 and out.max() <= 1


def test_color_jitter_negative_strength_raises():
    with pytest.raises(ValueError, match="strength"):
        color_jitter(random_images(2, 4, 4), -0.5)


def test_random_grayscale_p_one_gives_equal_channels_with_luma_weights():
    images = random_images(4, 5, 5, seed=27)
    out = random_grayscale(images, seeded(28), p=1.0)
    expected = sum(w * images[:, c] for c, w in enumerate(GRAY_WEIGHTS))
    for channel in range(3):
        assert_near(out[:, channel], expected, atol=1e-6)


def test_random_grayscale_p_zero_is_identity():
    images = random_images(4, 5, 5, seed=29)
    assert torch.equal(random_grayscale(images, seeded(30), p=0.0), images)


def test_color_jitter_and_grayscale_rates():
    """~80% of samples jittered and ~20% turned gray, on 2000 copies of one colourful image."""
    images = repeated(random_images(1, 2, 2, seed=31, low=0.2, high=0.8)[0], 2000)
    jittered = color_jitter(images, 1.0, seeded(32))
    changed = (jittered - images).abs().flatten(1).amax(dim=1) > 1e-4
    assert abs(changed.float().mean().item() - 0.8) < 0.05
    gray = random_grayscale(images, seeded(33))
    is_gray = (gray - gray[:, :1]).abs().flatten(1).amax(dim=1) < 1e-6
    assert abs(is_gray.float().mean().item() - 0.2) < 0.05


def test_simclr_augment_jitter_and_grayscale_rates():
    """The full pretraining view (no blur; crop forced to the full image) jitters ~80% and grays ~20% of samples."""
    image = random_images(1, 2, 1, seed=34, low=0.2, high=0.8)[0].expand(3, 2, 2)  # mirror-symmetric: flips are no-ops
    images = repeated(image, 2000)
    views = SimCLRAugment(size=2, blur=False, crop_scale=(1.0, 1.0))(images, seeded(35))
    is_gray = (views - views[:, :1]).abs().flatten(1).amax(dim=1) < 1e-6
    assert abs(is_gray.float().mean().item() - 0.2) < 0.05
    unchanged = (views - images).abs().flatten(1).amax(dim=1) < 1e-4
    assert abs(unchanged[~is_gray].float().mean().item() - 0.2) < 0.05  # the ~20% not jittered


# --- blur -------------------------------------------------------------------------------------------------------------


def test_random_gaussian_blur_p_zero_is_identity():
    images = random_images(3, 30, 30, seed=36)
    assert_near(random_gaussian_blur(images, seeded(37), p=0.0), images, atol=1e-6)


def test_random_gaussian_blur_keeps_constant_interior():
    images = torch.full((4, 3, 50, 50), 0.6)
    out = random_gaussian_blur(images, seeded(38), p=1.0, sigma=(1.0, 2.0))
    radius = (50 // 10) // 2
    interior = out[..., radius:-radius, radius:-radius]
    assert_near(interior, torch.full_like(interior, 0.6), atol=1e-5)
    # Zero "SAME" padding darkens the border, as in the TF reference.
    assert (out[..., 0, :] < 0.6 - 1e-3).all()
    assert out.shape == images.shape


def test_random_gaussian_blur_reduces_noise_variance():
    noise = random_images(6, 40, 40, seed=39)
    radius = (40 // 10) // 2

    def interior_variance(x):
        return x[..., radius:-radius, radius:-radius].flatten(1).var(dim=1)

    strong = random_gaussian_blur(noise, seeded(40), p=1.0, sigma=(1.0, 2.0))
    assert (interior_variance(strong) < 0.7 * interior_variance(noise)).all()
    default = random_gaussian_blur(noise, seeded(41), p=1.0)
    assert (interior_variance(default) <= interior_variance(noise) + 1e-6).all()
    assert interior_variance(default).mean() < interior_variance(noise).mean()


def test_random_gaussian_blur_rate():
    images = repeated(random_images(1, 20, 20, seed=42)[0], 1000)
    out = random_gaussian_blur(images, seeded(43), sigma=(1.0, 2.0))
    blurred = (out - images).abs().flatten(1).amax(dim=1) > 1e-4
    assert abs(blurred.float().mean().item() - 0.5) < 0.05


# --- centre crop ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("augment", [SimCLRAugment(16, blur=True), CropFlipAugment(16)])
def test_shards_together_apply_the_augmentations_of_the_whole_batch(augment):
    images = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8, generator=seeded(21))
    generator = seeded(5)
    whole = torch.cat([augment(images, generator), augment(images, generator)])
    shards = []
    for start in (0, 3):
        generator = ShardedGenerator(seeded(5), start=start, total=6)
        shard = images[start : start + 3]
        shards.append(torch.cat([augment(shard, generator), augment(shard, generator)]))
    assert torch.equal(torch.cat([whole[:3], whole[6:9], whole[3:6], whole[9:]]), torch.cat(shards))
    assert not torch.equal(shards[0][:3], shards[1][:3])  # the shards did not just repeat each other


def test_center_crop_is_deterministic_and_takes_central_0875():
    images = random_images(2, 32, 32, seed=44)
    crop = CenterCrop(size=28)
    out = crop(images)
    assert torch.equal(out, crop(images))
    # 0.875 * 32 = 28: the box starts 2 pixels in; at size 28 it copies those pixels.
    assert_near(out, images[..., 2:30, 2:30], atol=1e-4)


def test_center_crop_non_square_uses_shorter_side():
    images = random_images(2, 32, 40, seed=45)
    out = CenterCrop(size=28)(images)
    assert_near(out, images[..., 2:30, 6:34], atol=1e-4)


def test_center_crop_skips_the_border():
    images = torch.ones(2, 3, 32, 32)
    images[..., 4:-4, 4:-4] = 0  # a 4-pixel frame of ones around a zero interior
    out = CenterCrop(size=16, proportion=0.5)(images)  # box 8..24, far from the frame
    assert torch.equal(out, torch.zeros_like(out))
    full = CenterCrop(size=32, proportion=1.0)(images)
    assert full[..., 0, :].min() > 0.99  # with the whole image, the frame shows


@pytest.mark.parametrize(("size", "proportion"), [(8, 1.0), (16, 1.0), (32, 1.0), (33, 0.875), (224, 0.875)])
def test_evaluation_keeps_whole_images_of_32_px_or_less_as_the_reference_does(size, proportion):
    assert CenterCrop.for_evaluation(size) == CenterCrop(size, proportion)


# --- bad input --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images",
    [torch.rand(3, 16, 16), torch.rand(2, 1, 16, 16), torch.rand(2, 4, 16, 16), torch.rand(1, 2, 3, 16, 16)],
    ids=["3d", "1-channel", "4-channel", "5d"],
)
@pytest.mark.parametrize("augment", [*PIPELINES, CenterCrop(size=16)], ids=[*PIPELINE_IDS, "center-crop"])
def test_bad_image_batch_raises_naming_images(augment, images):
    with pytest.raises(ValueError, match="images"):
        augment(images)


def test_integer_non_uint8_images_raise():
    with pytest.raises(ValueError, match="images"):
        CropFlipAugment(size=8)(torch.zeros(2, 3, 8, 8, dtype=torch.int32))


@pytest.mark.parametrize("size", [0, -4, 2.5])
@pytest.mark.parametrize("cls", [SimCLRAugment, CropFlipAugment, CenterCrop])
def test_bad_size_raises_naming_size(cls, size):
    with pytest.raises(ValueError, match="size"):
        cls(size=size)


def test_negative_color_strength_raises():
    with pytest.raises(ValueError, match="color_strength"):
        SimCLRAugment(size=8, color_strength=-0.1)


@pytest.mark.parametrize("proportion", [0.0, -0.5, 1.5, math.nan])
def test_center_crop_bad_proportion_raises(proportion):
    with pytest.raises(ValueError, match="proportion"):
        CenterCrop(size=8, proportion=proportion)
