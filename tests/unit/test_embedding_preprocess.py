"""Preprocessing for the backbone: any usable picture to the normalized 224x224 batch, or an error naming the image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tubelens.devtools.fakeyoutube.thumbnails import bomb_png
from tubelens.errors import InvalidInput, TooLarge
from tubelens.images import content_box
from tubelens.modelkit import ts_image_handler
from tubelens.modelkit.preprocess import crop_pixels, to_batch

GREY = (128, 128, 128)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_a_batch_is_float32_nchw_scaled_to_minus_one_one() -> None:
    batch = to_batch([Image.new("RGB", (300, 200), (255, 0, 0)), Image.new("RGB", (200, 300), (0, 0, 0))])

    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_allclose(batch[0].reshape(3, -1).mean(axis=1), [1.0, -1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(batch[1], -1.0)


def test_no_images_make_an_empty_batch() -> None:
    assert to_batch([]).shape == (0, 3, 224, 224)


def test_the_centre_is_kept_and_the_long_sides_cropped() -> None:
    image = Image.new("RGB", (400, 200), GREY)
    image.paste((255, 0, 0), (0, 0, 40, 200))  # a red band on the far left, outside the centre 224/256 of the width
    image.paste((0, 0, 255), (195, 95, 205, 105))  # a blue dot in the middle

    pixels = crop_pixels(image)

    assert pixels.shape == (224, 224, 3)
    assert np.abs(pixels[:, :50].astype(int) - GREY).max() <= 1
    assert tuple(pixels[112, 112]) == (0, 0, 255)


def test_an_image_already_224_square_is_used_as_it_is() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert np.array_equal(crop_pixels(Image.fromarray(pixels)), pixels)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16"])
def test_other_colour_modes_become_rgb(mode: str) -> None:
    assert crop_pixels(Image.new("RGB", (320, 180), GREY).convert(mode)).shape == (224, 224, 3)


def test_transparent_pixels_become_black() -> None:
    image = Image.new("RGBA", (256, 256), (255, 255, 255, 0))
    assert crop_pixels(image).max() == 0


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_encoded_images_are_decoded(fmt: str) -> None:
    image = Image.new("RGB", (320, 180), (0, 255, 0))
    batch = to_batch([encoded(image, fmt)])
    np.testing.assert_allclose(batch[0, 1].mean(), 1.0, atol=0.02)


@pytest.mark.parametrize(
    "data, error",
    [
        pytest.param(b"", "empty image", id="empty"),
        pytest.param(b"<!doctype html><html>", "not a JPEG, PNG or WebP", id="html"),
        pytest.param(encoded(Image.new("RGB", (64, 64)), "GIF"), "not a JPEG, PNG or WebP", id="gif"),
        pytest.param(encoded(Image.new("RGB", (320, 180), GREY), "JPEG")[:300], "truncated|corrupt", id="truncated"),
    ],
)
def test_undecodable_images_are_invalid_input_naming_their_index(data: bytes, error: str) -> None:
    good = encoded(Image.new("RGB", (64, 64)), "PNG")
    with pytest.raises(InvalidInput, match=rf"^image 2: .*({error})") as raised:
        to_batch([good, good, data, good])
    assert raised.value.field == "images[2]"


def test_a_decompression_bomb_is_too_large_before_any_pixel_is_decoded() -> None:
    with pytest.raises(TooLarge, match=r"^image 0: ") as raised:
        to_batch([bomb_png()])
    assert raised.value.field == "images[0]"


def test_images_over_the_pixel_cap_are_too_large() -> None:
    with pytest.raises(TooLarge, match="declares 320x180 pixels, over the limit of 10000"):
        to_batch([encoded(Image.new("RGB", (320, 180)), "JPEG")], max_pixels=10_000)


def letterboxed(bar: int) -> Image.Image:
    """A 480x360 hqdefault of a 16:9 picture: `bar` black rows top and bottom, a noisy picture between."""
    rng = np.random.default_rng(0)
    pixels = np.zeros((360, 480, 3), dtype=np.uint8)
    pixels[bar : 360 - bar] = rng.integers(60, 255, size=(360 - 2 * bar, 480, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_letterbox_bars_are_cropped_before_the_centre_crop() -> None:
    image = letterboxed(45)
    encoded_jpeg = encoded(image, "JPEG")  # JPEG ringing lifts a few bar pixels: still bars

    assert content_box(image) == (0, 45, 480, 315)
    assert content_box(Image.open(io.BytesIO(encoded_jpeg))) == (0, 45, 480, 315)
    pixels = crop_pixels(image)
    # Without the crop the top and bottom 16 rows of the 224 crop would be bar; now no row is black.
    assert pixels.reshape(224, -1).max(axis=1).min() > 24
    expected = crop_pixels(image.crop((0, 45, 480, 315)))
    assert np.array_equal(pixels, expected)
    batch = to_batch([encoded_jpeg])
    assert float(batch[0, :, :8].mean()) > -0.5  # the top rows show the picture (-1 would be black)


def test_pillarbox_bars_go_too_and_a_picture_without_bars_stays_whole() -> None:
    image = letterboxed(0).transpose(Image.Transpose.ROTATE_90)  # 360x480, no bars
    assert content_box(image) == (0, 0, 360, 480)
    pillared = Image.new("RGB", (480, 360))
    pillared.paste(image.resize((270, 360)), (105, 0))
    assert content_box(pillared) == (105, 0, 375, 360)


def test_a_dark_picture_is_not_taken_for_bars() -> None:
    night = Image.new("RGB", (480, 360))
    night.paste((200, 200, 200), (230, 170, 250, 190))  # a small light in the middle of a black picture
    assert content_box(night) == (0, 0, 480, 360)
    assert content_box(Image.new("RGB", (480, 360))) == (0, 0, 480, 360)


def test_the_image_handler_crops_bars_as_the_embedding_service_does() -> None:
    image = letterboxed(45)
    assert ts_image_handler.content_box(image) == content_box(image)
    assert np.array_equal(ts_image_handler.crop_pixels(image, resize=256, crop=224), crop_pixels(image))
