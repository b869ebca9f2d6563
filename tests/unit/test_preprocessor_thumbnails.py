"""Thumbnails: the right URL is chosen, bad bytes are refused with a reason, good ones are normalized and hashed."""

from __future__ import annotations

import io
import itertools
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.preprocessorkit import encoded, jpeg, picture, png_declaring
from tubelens.errors import InvalidInput, TooLarge
from tubelens.images import hamming_distance, phash
from tubelens.objects import LocalObjectStore
from tubelens.preprocessor.thumbnails import (
    choose_thumbnail,
    prepare_thumbnail,
    store_thumbnail,
)
from tubelens.v1 import events_pb2

MAX_PIXELS = 40_000_000


def thumbnail(name: str, size: tuple[int, int]) -> events_pb2.Thumbnail:
    return events_pb2.Thumbnail(name=name, url=f"https://i.ytimg.com/vi/x/{name}.jpg", width=size[0], height=size[1])


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- choosing ------------------------------------------------------------------------------------------------------


def test_the_medium_thumbnail_is_preferred_then_high_then_default() -> None:
    default, medium, high = (
        thumbnail("default", (120, 90)),
        thumbnail("medium", (320, 180)),
        thumbnail("high", (480, 360)),
    )
    maxres = thumbnail("maxres", (1280, 720))
    assert choose_thumbnail([default, high, maxres, medium]) == medium
    assert choose_thumbnail([maxres, default, high]) == high
    assert choose_thumbnail([maxres, default]) == default
    assert choose_thumbnail([maxres]) == maxres


def test_a_video_without_a_thumbnail_url_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="no thumbnail URL"):
        choose_thumbnail([events_pb2.Thumbnail(name="medium", url="")])


# --- refusing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "thumbnail body is empty"),
        (b"<!DOCTYPE html><html><body>Sign in to continue</body></html>", "thumbnail is an HTML page, not an image"),
        (b"\n  <html><head><title>404</title></head></html>", "thumbnail is an HTML page, not an image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "thumbnail is markup (XML or SVG), not an image"),
        (b"GIF89a" + b"\x00" * 64, "unsupported image format"),
        (b"BM" + b"\x00" * 64, "unsupported image format"),
        (b"just some text that is not an image", "thumbnail is not an image"),
    ],
)
def test_bytes_that_are_not_a_supported_image_are_refused_by_their_magic_bytes(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        prepare_thumbnail(body, max_pixels=MAX_PIXELS)
    assert type(caught.value) is InvalidInput
    assert reason in caught.value.message


def test_a_truncated_jpeg_is_refused_as_corrupt() -> None:
    data = jpeg(1)
    with pytest.raises(InvalidInput, match="corrupt or truncated JPEG"):
        prepare_thumbnail(data[: len(data) // 2], max_pixels=MAX_PIXELS)


def test_a_jpeg_with_garbage_after_its_header_is_refused_as_corrupt() -> None:
    data = jpeg(1)
    with pytest.raises(InvalidInput, match="corrupt JPEG: its header cannot be parsed"):
        prepare_thumbnail(data[:20] + b"\x00" * (len(data) - 20), max_pixels=MAX_PIXELS)


def test_a_png_declaring_900_megapixels_is_too_large_and_its_pixels_are_never_decoded() -> None:
    bomb = png_declaring(30_000, 30_000)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(TooLarge, match="too many pixels"):
        prepare_thumbnail(bomb, max_pixels=MAX_PIXELS)
    # Decoding would need 2.7 GB and seconds; refusing on the header takes a moment. (Its pixel data is
    # 64 bytes, so a decode attempt would also have failed as corrupt, not as too large.)
    assert time.perf_counter() - started < 0.5


def test_an_image_declaring_more_than_the_configured_pixels_is_too_large() -> None:
    with pytest.raises(TooLarge, match="declares 8000x6000 pixels, over the limit of 40000000"):
        prepare_thumbnail(png_declaring(8000, 6000), max_pixels=MAX_PIXELS)


def test_a_jpeg_whose_header_declares_a_huge_frame_is_too_large() -> None:
    data = bytearray(jpeg(1, size=(16, 16)))
    frame_header = data.index(b"\xff\xc0")
    data[frame_header + 5 : frame_header + 9] = (60_000).to_bytes(2, "big") * 2  # height, width
    with pytest.raises(TooLarge):
        prepare_thumbnail(bytes(data), max_pixels=MAX_PIXELS)


# --- normalizing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "source_format", "size"),
    [
        (jpeg(3), "JPEG", (320, 180)),
        (jpeg(3, size=(480, 360)), "JPEG", (480, 360)),
        (jpeg(3, size=(1280, 720)), "JPEG", (1280, 720)),
        (encoded(picture(3).convert("RGBA"), "PNG"), "PNG", (320, 180)),
        (encoded(picture(3).convert("L"), "PNG"), "PNG", (320, 180)),
        (encoded(picture(3).convert("P"), "PNG"), "PNG", (320, 180)),
        (encoded(picture(3), "WEBP", quality=80), "WEBP", (320, 180)),
    ],
)
def test_every_supported_thumbnail_yields_the_original_and_rgb_variants_at_120x90_and_224x224(
    source: bytes, source_format: str, size: tuple[int, int]
) -> None:
    prepared = prepare_thumbnail(source, max_pixels=MAX_PIXELS)

    assert prepared.source_format == source_format
    original, seed, backbone = prepared.variants
    assert (original.name, original.data, original.width, original.height) == ("original", source, *size)
    for variant, name, expected in ((seed, "120x90", (120, 90)), (backbone, "224x224", (224, 224))):
        image = decode(variant.data)
        assert (variant.name, variant.content_type, variant.suffix) == (name, "image/jpeg", ".jpg")
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", expected)
        assert (variant.width, variant.height) == expected


def test_the_120x90_variant_letterboxes_a_16_by_9_picture_like_youtubes_default_jpg() -> None:
    seed = decode(prepare_thumbnail(jpeg(4), max_pixels=MAX_PIXELS).variants[1].data).convert("L")
    bars = [seed.getpixel((x, y)) for x in range(0, 120, 10) for y in (0, 1, 88, 89)]
    assert max(bars) < 20, "black bars above and below"
    assert max(seed.getpixel((x, 45)) for x in range(120)) > 60, "the picture in the middle"


def test_the_224x224_variant_is_the_centre_of_the_picture_scaled_to_a_256_shorter_side() -> None:
    # A white square in the centre of a black 320x180 picture: 60 source pixels scale to 60 * 256/180 = 85.
    source = Image.new("RGB", (320, 180))
    source.paste((255, 255, 255), (130, 60, 190, 120))
    backbone = decode(prepare_thumbnail(encoded(source, "PNG"), max_pixels=MAX_PIXELS).variants[2].data)
    row = [backbone.convert("L").getpixel((x, 112)) for x in range(224)]
    white = [x for x, value in enumerate(row) if value > 128]
    assert 83 <= len(white) <= 87
    assert abs((white[0] + white[-1]) / 2 - 111.5) <= 1


# --- perceptual hash -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_the_phash_barely_moves_when_a_thumbnail_is_recompressed_or_resized(seed: int) -> None:
    original = picture(seed)
    reference = phash(original)
    altered = [
        decode(encoded(original, "JPEG", quality=30)),
        original.resize((160, 90), Image.Resampling.BILINEAR),
        original.resize((480, 270), Image.Resampling.BICUBIC),
        decode(encoded(original.resize((120, 68)), "JPEG", quality=60)),
    ]
    distances = [hamming_distance(reference, phash(image)) for image in altered]
    assert max(distances) <= 6, distances


def test_the_phashes_of_different_thumbnails_are_far_apart() -> None:
    hashes = [phash(picture(seed)) for seed in range(12)]
    distances = [hamming_distance(a, b) for a, b in itertools.combinations(hashes, 2)]
    assert min(distances) >= 14, sorted(distances)[:5]
    assert 24 <= sum(distances) / len(distances) <= 40, "independent pictures differ in about half the bits"


def test_the_phash_is_64_bits_and_the_event_carries_the_one_prepare_computed(tmp_path: Path) -> None:
    prepared = prepare_thumbnail(jpeg(5), max_pixels=MAX_PIXELS)
    assert 0 <= prepared.phash < 2**64 and prepared.phash.bit_length() > 32
    store = LocalObjectStore(tmp_path, "objects")
    store.ensure_bucket()
    stored = store_thumbnail(store, prepared, video_id="vid", source_url="https://i.ytimg.com/vi/vid/mqdefault.jpg")
    assert events_pb2.ThumbnailStored.FromString(stored.SerializeToString()).phash == prepared.phash


# --- storing -------------------------------------------------------------------------------------------------------


def test_variants_are_stored_content_addressed_and_storing_again_writes_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, "objects")
    store.ensure_bucket()
    source = jpeg(6)
    url = "https://i.ytimg.com/vi/vid/mqdefault.jpg"

    first = store_thumbnail(store, prepare_thumbnail(source, max_pixels=MAX_PIXELS), video_id="vid", source_url=url)
    keys = [info.key for info in store.list()]
    again = store_thumbnail(store, prepare_thumbnail(source, max_pixels=MAX_PIXELS), video_id="vid", source_url=url)

    assert [info.key for info in store.list()] == keys and len(keys) == 3
    assert again == first, "a redelivery re-emits the same event"
    assert (first.video_id, first.source_url, first.source_format) == ("vid", url, "JPEG")
    assert [image.variant for image in first.images] == ["original", "120x90", "224x224"]
    original = first.images[0].ref
    assert original.key.startswith("thumbnails/original/") and original.key.endswith(".jpg")
    assert (original.content_type, original.size_bytes) == ("image/jpeg", len(source))
    assert store.get(original.key) == source
    for image in first.images[1:]:
        assert image.ref.key.startswith(f"thumbnails/{image.variant}/")
        assert decode(store.get(image.ref.key)).size == (image.width, image.height)
