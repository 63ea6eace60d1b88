"""High bit depth on the client side (issue 12): 16-bit samples in client.fill's byte helpers, 16-bit PNG files in
and out of client.imaging, composing at 16 bits, and ``gimp-inpaint fill`` on a 16-bit PNG through the real daemon
(OpenCV, and the tiny diffusion model)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from gimp_inpaint.client import cli
from gimp_inpaint.client.document import ResultLayer
from gimp_inpaint.client.fill import TRANSPARENT_RGB, clear_transparent, covers_transparent
from gimp_inpaint.client.imaging import (
    ArrayDocument,
    array_from_plane,
    compose,
    load_rgba,
    plane_from_array,
    save_image,
)
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.protocol import Rect
from PIL import Image
from running_daemon import running_daemon
from skimage import data


def deep(rgb: np.ndarray) -> np.ndarray:
    """H×W×C uint8 → uint16: each level × 257 plus a horizontal ramp of 0…256, so almost no sample is a level."""
    ramp = np.linspace(0, 256, rgb.shape[1]).round().astype(np.uint32)[None, :, None]
    return np.minimum(rgb.astype(np.uint32) * 257 + ramp, 65535).astype(np.uint16)


def deep_astronaut() -> np.ndarray:
    """scikit-image's astronaut (512×512) as 16-bit RGBA, opaque."""
    rgb = deep(data.astronaut())
    return np.dstack([rgb, np.full(rgb.shape[:2], 65535, np.uint16)])


def write_png(path: Path, rgba: np.ndarray) -> None:
    """A 16-bit PNG of ``rgba`` (H×W×4 uint16) by OpenCV, independent of the code under test."""
    assert cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))


def read_png(path: Path) -> np.ndarray:
    """A PNG's samples as OpenCV decodes them, RGB(A) order."""
    samples = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(samples, cv2.COLOR_BGRA2RGBA if samples.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def test_transparent_16_bit_pixels_get_the_neutral_grey_and_the_others_keep_every_byte() -> None:
    rgba = deep_astronaut()[:4, :6].copy()
    rgba[0, 0, 3] = 0      # transparent
    rgba[0, 1, 3] = 1      # alpha 1/65535: its high byte is 0
    rgba[0, 2, 3] = 256    # its low byte is 0
    rgba[1, :, 3] = 0      # a transparent row
    data_bytes = rgba.astype("<u2").tobytes()
    cleared = np.frombuffer(clear_transparent(data_bytes, 16), "<u2").reshape(rgba.shape)
    transparent = rgba[..., 3] == 0
    assert (cleared[transparent][:, :3] == np.array(TRANSPARENT_RGB) * 257).all()
    assert np.array_equal(cleared[transparent][:, 3], rgba[transparent][:, 3])
    assert np.array_equal(cleared[~transparent], rgba[~transparent])
    opaque = deep_astronaut()[:4, :6].astype("<u2").tobytes()
    assert clear_transparent(opaque, 16) is opaque
    with pytest.raises(ValueError, match="16-bit"):
        clear_transparent(data_bytes[:-2], 16)
    mask = np.zeros(rgba.shape[:2], np.uint8)
    mask[0, 1:3] = 255
    assert not covers_transparent(data_bytes, mask.tobytes(), 16)  # alpha 1 and 256 are not 0
    mask[0, 0] = 1
    assert covers_transparent(data_bytes, mask.tobytes(), 16)
    with pytest.raises(ValueError):
        covers_transparent(data_bytes, mask.tobytes())  # 8-bit lengths do not fit


def test_composing_at_16_bits_is_the_blend_formula_in_floating_point() -> None:
    original = deep_astronaut()[100:228, 150:278]
    image = deep(255 - data.astronaut()[100:228, 150:278])
    image = np.dstack([image, np.full(image.shape[:2], 40000, np.uint16)])
    yy, xx = np.mgrid[:128, :128]
    blend = np.clip(255 - np.hypot(yy - 64, xx - 64) * 4, 0, 255).astype(np.uint8)  # 255 in the middle, 0 out
    composed = compose(original, image, blend)
    assert composed.dtype == np.uint16
    weight = blend[..., None] / 255.0
    reference = np.rint(original * (1 - weight) + image * weight)  # float64
    assert np.abs(composed - reference).max() <= 1  # float32 against float64: a tie may round the other way
    assert np.mean(composed == reference) > 0.999
    assert np.array_equal(composed[blend == 0], original[blend == 0])
    assert np.array_equal(composed[blend == 255], image[blend == 255])
    with pytest.raises(ValueError):
        compose(original, (image // 257).astype(np.uint8), blend)


def test_planes_carry_16_bit_arrays_little_endian() -> None:
    rgba = deep_astronaut()[:30, :40]
    plane = plane_from_array(rgba)
    assert plane.bits == 16 and bytes(plane.data) == rgba.astype("<u2").tobytes()
    assert np.array_equal(array_from_plane(plane), rgba)
    assert plane_from_array(rgba[..., 0].copy()).channels == 1


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_a_16_bit_png_is_read_at_16_bits_whatever_its_colour_type(tmp_path: Path, channels: int) -> None:
    rgba = deep_astronaut()
    rgba[:50, :, 3] = np.linspace(0, 65535, 512).round().astype(np.uint16)
    path = tmp_path / "deep.png"
    if channels == 1:
        gray = rgba[..., 0]
        assert cv2.imwrite(str(path), gray)
        expected = np.dstack([gray, gray, gray, np.full(gray.shape, 65535, np.uint16)])
    elif channels == 2:  # gray and alpha: OpenCV writes no such PNG, Pillow writes no 16-bit one: by hand below
        gray_alpha = rgba[..., [0, 3]]
        path.write_bytes(gray_alpha_png(gray_alpha))
        expected = np.dstack([gray_alpha[..., 0]] * 3 + [gray_alpha[..., 1]])
    elif channels == 3:
        assert cv2.imwrite(str(path), cv2.cvtColor(rgba[..., :3], cv2.COLOR_RGB2BGR))
        expected = rgba.copy()
        expected[..., 3] = 65535
    else:
        write_png(path, rgba)
        expected = rgba
    loaded = load_rgba(path)
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, expected)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data (PNG specification, 5.3)."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def gray_alpha_png(samples: np.ndarray) -> bytes:
    """A 16-bit gray-and-alpha PNG (colour type 4) of H×W×2 uint16 ``samples``, written with zlib."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[row].astype(">u2").tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_16_bit_png_is_turned_as_its_exif_orientation_says(tmp_path: Path, orientation: int) -> None:
    """The same rotation as an 8-bit file of that orientation, which Pillow turns (``ImageOps.exif_transpose``)."""
    rgba = deep_astronaut()[:120, :200]
    exif = Image.Exif()
    exif[0x0112] = orientation
    tiff = exif.tobytes()[len(b"Exif\x00\x00"):]  # a PNG's eXIf chunk holds the TIFF structure alone
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    assert ok
    stream = encoded.tobytes()
    after_header = 8 + 8 + 13 + 4  # signature, then IHDR's length, type, data and CRC
    deep_path, eight_path = tmp_path / "deep.png", tmp_path / "eight.png"
    deep_path.write_bytes(stream[:after_header] + png_chunk(b"eXIf", tiff) + stream[after_header:])
    Image.fromarray((rgba // 257).astype(np.uint8)).save(eight_path, exif=exif)
    turned, reference = load_rgba(deep_path), load_rgba(eight_path)
    assert turned.shape == reference.shape != rgba.shape or orientation == 3
    assert np.array_equal((turned // 257).astype(np.uint8), reference)


def test_16_bit_pictures_are_written_as_16_bit_pngs_and_reduced_for_other_formats(tmp_path: Path) -> None:
    rgba = deep_astronaut()[:64, :96].copy()
    save_image(tmp_path / "opaque.png", rgba, png_compression=1)
    stored = cv2.imread(str(tmp_path / "opaque.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and stored.shape == (64, 96, 3)  # opaque: RGB
    assert np.array_equal(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB), rgba[..., :3])
    rgba[:8, :, 3] = 1234
    save_image(tmp_path / "alpha.png", rgba)
    assert np.array_equal(read_png(tmp_path / "alpha.png"), rgba)
    save_image(tmp_path / "small.webp", rgba)
    with Image.open(tmp_path / "small.webp") as reduced:
        assert reduced.mode == "RGBA"
    save_image(tmp_path / "lossless.tif", rgba)
    with Image.open(tmp_path / "lossless.tif") as tiff:
        assert np.array_equal(np.asarray(tiff), np.rint(rgba / 257).astype(np.uint8))


def test_an_array_document_reads_and_composes_at_its_depth() -> None:
    picture = deep_astronaut()
    document = ArrayDocument(picture, np.zeros(picture.shape[:2], np.uint8))
    assert document.bits == 16 and ArrayDocument(picture.astype(np.uint8), document.mask).bits == 8
    rect = Rect(10, 20, 30, 40)
    assert document.read_rgba(rect) == picture[20:60, 10:40].astype("<u2").tobytes()
    patch = np.full((40, 30, 4), 50000, np.uint16)
    layer = ResultLayer("deep", 10, 20, 30, 40, patch.astype("<u2").tobytes(), bytes([255]) * 1200, 1, bits=16)
    result = document.composite(layer)
    assert (result[20:60, 10:40] == 50000).all()
    result[20:60, 10:40] = picture[20:60, 10:40]
    assert np.array_equal(result, picture)
    with pytest.raises(ValueError):
        ResultLayer("short", 0, 0, 30, 40, bytes(30 * 40 * 4), bytes(1200), 1, bits=16)


@pytest.fixture
def astronaut_files(tmp_path: Path) -> tuple[Path, Path]:
    """The 16-bit astronaut (:func:`deep_astronaut`) as a 16-bit PNG, and a mask of a 40×30 patch of the flag."""
    image_path, mask_path = tmp_path / "deep.png", tmp_path / "mask.png"
    write_png(image_path, deep_astronaut())
    mask = np.zeros((512, 512), np.uint8)
    mask[100:130, 20:60] = 255
    Image.fromarray(mask).save(mask_path)
    return image_path, mask_path


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """The real daemon with OpenCV, and the tiny SD inpainting model when the test asks for it; ``(url, config)``."""
    engines = [OpenCVEngine()]
    if "tiny_inpaint_model" in request.fixturenames:
        from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
        from gimp_inpaint.daemon.pool import ModelPool
        from gimp_inpaint.daemon.registry import ModelSpec, Registry

        engines.append(DiffusersEngine(ModelSpec("tiny", str(request.getfixturevalue("tiny_inpaint_model"))),
                                       Registry(), ModelPool(100 * 10**9), device="cpu"))
    config = tmp_path / "daemon-config"
    with running_daemon(config, engines) as (url, _):
        yield url, config


def fill(files: tuple[Path, Path], daemon: tuple[str, Path], out: Path, *flags: str) -> np.ndarray:
    url, config = daemon
    assert cli.main(["fill", *map(str, files), "-o", str(out), "--url", url, "--config-dir", str(config),
                     "--seed", "5", *flags]) == 0
    return read_png(out)


def test_the_cli_fills_a_16_bit_png_with_opencv_keeping_16_bits(astronaut_files: tuple[Path, Path],
                                                               daemon: tuple[str, Path], tmp_path: Path) -> None:
    """Outside the blend mask the output is the input's 16-bit samples; the fill is OpenCV's 8-bit levels."""
    result = fill(astronaut_files, daemon, tmp_path / "out.png", "--engine", "opencv", "--grow", "0", "--feather",
                  "2")
    original = deep_astronaut()[..., :3]
    assert result.dtype == np.uint16 and result.shape == (512, 512, 3)
    changed = np.any(result != original, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.min() >= 100 - 9 and ys.max() < 130 + 9 and xs.min() >= 20 - 9 and xs.max() < 60 + 9
    np.testing.assert_array_equal(result[~changed], original[~changed])
    assert not np.count_nonzero(result[109:121, 29:51] % 257)  # the engine's 8-bit levels where the mask is full


@pytest.mark.diffusers
def test_the_cli_fills_a_16_bit_png_with_the_tiny_diffusion_model_at_16_bits(
        astronaut_files: tuple[Path, Path], daemon: tuple[str, Path], tmp_path: Path, tiny_inpaint_model: Path) -> None:
    result = fill(astronaut_files, daemon, tmp_path / "out.png", "--engine", "tiny", "--prompt", "a flag",
                  "--num-inference-steps", "2")
    original = deep_astronaut()[..., :3]
    assert result.dtype == np.uint16
    full = result[109:121, 29:51]
    between = full[(full > 0) & (full < 65535)]
    assert between.size > full.size / 2 and np.count_nonzero(between % 257) / between.size > 0.98
    changed = np.any(result != original, axis=2)
    assert changed[100:130, 20:60].mean() > 0.9
    np.testing.assert_array_equal(result[~changed], original[~changed])
    eight = tmp_path / "eight.png"
    Image.fromarray(data.astronaut()).save(eight)
    fill((eight, astronaut_files[1]), daemon, tmp_path / "out8.png", "--engine", "tiny", "--prompt", "a flag",
         "--num-inference-steps", "2")
    assert cv2.imread(str(tmp_path / "out8.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8  # 8-bit stays 8-bit


def test_the_cli_expands_a_16_bit_png_at_16_bits(astronaut_files: tuple[Path, Path], daemon: tuple[str, Path],
                                                tmp_path: Path) -> None:
    """Generative Expand's document (client.expand.ExpandedDocument) reads at the picture's depth: the grown
    picture is a 16-bit PNG holding the old picture's samples exactly where the blend mask does not reach."""
    url, config = daemon
    out = tmp_path / "wide.png"
    assert cli.main(["expand", str(astronaut_files[0]), "-o", str(out), "--url", url, "--config-dir", str(config),
                     "--engine", "opencv", "--pixels", "64", "--sides", "right", "--grow", "0", "--feather",
                     "0"]) == 0
    result = read_png(out)
    assert result.dtype == np.uint16 and result.shape[:2] == (512, 576)
    np.testing.assert_array_equal(result[:, :512, :3], deep_astronaut()[..., :3])
    assert result[:, 512:, :3].any()
