"""client.imaging (compose exactness, planes, bounds) and the gimp-inpaint command line, end to end
against the real daemon server."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from gimp_inpaint.client import cli, connection
from gimp_inpaint.client.fill import add_hint
from gimp_inpaint.client.imaging import (
    MAX_IMAGE_PIXELS,
    array_from_plane,
    compose,
    load_mask,
    load_rgba,
    mask_bounds,
    plane_from_array,
    save_image,
)
from gimp_inpaint.daemon.config import APP_NAME
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.protocol import EDITOR_OPTIONS, FILL_OPTIONS, EngineInfo, Rect, Scheduler
from PIL import Image
from running_daemon import LoadingEngine, StepEngine, free_port, running_daemon
from skimage import data
from test_client import BAD_URLS

pytestmark = pytest.mark.timeout(120)


def _photo_rgba() -> np.ndarray:
    photo = data.astronaut()
    return np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])


def test_compose_is_exact_at_0_and_255_and_rounds_in_between():
    original = _photo_rgba()[:128, :128]
    image = _photo_rgba()[200:328, 300:428]
    mask = np.tile(np.arange(128, dtype=np.uint8) * 2 + 1, (128, 1))  # 1, 3, …, 255
    mask[:, :8] = 0
    composed = compose(original, image, mask)
    assert np.array_equal(composed[:, :8], original[:, :8])
    assert np.array_equal(composed[:, -1], image[:, -1])
    m = mask[..., None].astype(np.float64) / 255
    expected = np.floor(original * (1 - m) + image * m + 0.5).astype(np.uint8)
    assert np.array_equal(composed, expected)


def test_compose_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="H×W×4"):
        compose(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))


def test_planes_round_trip_and_mask_bounds():
    rgba = _photo_rgba()[:30, :40]
    plane = plane_from_array(rgba)
    assert (plane.width, plane.height, plane.channels) == (40, 30, 4)
    assert np.array_equal(array_from_plane(plane), rgba)
    mask = np.zeros((30, 40), np.uint8)
    assert mask_bounds(mask) is None
    mask[5, 7] = 1
    mask[20, 33] = 255
    assert mask_bounds(mask) == Rect(7, 5, 27, 16)
    mask[29, 0] = 3  # touching the left and bottom edges
    assert mask_bounds(mask) == Rect(0, 5, 34, 25)
    assert array_from_plane(plane_from_array(mask)).shape == (30, 40)
    with pytest.raises(ValueError, match="uint8"):
        plane_from_array(rgba.astype(np.float32))


def test_save_image_drops_an_opaque_alpha_channel(tmp_path):
    rgba = _photo_rgba()[:16, :16]
    save_image(tmp_path / "a.jpg", rgba)
    save_image(tmp_path / "b.png", rgba)
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"
    assert np.array_equal(load_rgba(tmp_path / "b.png"), rgba)


def test_png_levels_write_the_same_pixels_and_9_is_not_larger(tmp_path):
    rgba = _photo_rgba()
    rgba[:64, :64, 3] = 128  # not all opaque: written as RGBA
    save_image(tmp_path / "fast.png", rgba, png_compression=1)
    save_image(tmp_path / "small.png", rgba, png_compression=9)
    assert np.array_equal(load_rgba(tmp_path / "fast.png"), rgba)
    assert np.array_equal(load_rgba(tmp_path / "small.png"), rgba)
    assert (tmp_path / "small.png").stat().st_size <= (tmp_path / "fast.png").stat().st_size
    with pytest.raises(ValueError, match="0 to 9"):
        save_image(tmp_path / "bad.png", rgba, png_compression=10)


def test_the_png_level_leaves_other_formats_at_their_defaults(tmp_path):
    rgb = data.astronaut()[:64, :64]
    save_image(tmp_path / "default.jpg", rgb)
    save_image(tmp_path / "level.jpg", rgb, png_compression=0)
    save_image(tmp_path / "default.tif", rgb)
    save_image(tmp_path / "level.tif", rgb, png_compression=9)
    assert (tmp_path / "level.jpg").read_bytes() == (tmp_path / "default.jpg").read_bytes()
    assert (tmp_path / "level.tif").read_bytes() == (tmp_path / "default.tif").read_bytes()


@pytest.mark.parametrize("command", ["fill", "demo"])
def test_png_compression_is_an_output_flag_of_fill_and_demo_with_a_fast_default(tmp_path, capsys, command):
    files = ["image.png", "mask.png"] if command == "fill" else []
    parse = cli.build_parser().parse_args
    assert parse([command, *files, "-o", "o.png"]).png_compression == cli.PNG_COMPRESSION == 1
    assert parse([command, *files, "-o", "o.png", "--png-compression", "9"]).png_compression == 9
    for bad in ("10", "-1", "fast", "1.5"):
        with pytest.raises(SystemExit) as caught:
            parse([command, *files, "-o", "o.png", "--png-compression", bad])
        assert caught.value.code == 2
        assert "must be an integer from 0 to 9" in capsys.readouterr().err
    assert "png_compression" not in {spec.name for spec in (*FILL_OPTIONS.values(), *EDITOR_OPTIONS.values())}


def _imported_by(code: str) -> set[str]:
    """The top-level packages a fresh interpreter has imported after running ``code``."""
    script = f"import sys\n{code}\nprint(' '.join(sorted({{name.partition('.')[0] for name in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


HEAVY = {"numpy", "PIL", "websockets", "msgpack"}
"""What ``gimp-inpaint --help`` does not import (issue 10): only argparse and the options table."""


@pytest.mark.parametrize("argv", [["--help"], ["fill", "--help"], ["demo", "--help"], ["status", "--help"]])
def test_help_imports_neither_numpy_pillow_websockets_nor_msgpack(argv):
    imported = _imported_by(f"from gimp_inpaint.client import cli\ntry:\n    cli.main({argv!r})\n"
                            "except SystemExit:\n    pass")
    assert "gimp_inpaint" in imported and not imported & HEAVY, imported & HEAVY


def test_status_imports_neither_numpy_nor_pillow():
    argv = ["status", "--url", f"ws://127.0.0.1:{free_port()}", "--token", "t", "--timeout", "2"]
    imported = _imported_by(f"from gimp_inpaint.client import cli\nassert cli.main({argv!r}) == 1")
    assert {"websockets", "msgpack"} <= imported and not imported & {"numpy", "PIL"}


def test_the_protocol_package_imports_each_name_of_its_all_from_the_module_that_type_checkers_see():
    """protocol/__init__.py's lazy table (``_MODULES``, PEP 562) equals its ``TYPE_CHECKING`` imports and
    ``__all__``, and each name is its module's object."""
    import ast
    import importlib

    import gimp_inpaint.protocol as protocol

    tree = ast.parse(Path(protocol.__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {node.module: tuple(alias.name for alias in node.names) for node in block.body
            if isinstance(node, ast.ImportFrom) and node.module}
    assert seen == protocol._MODULES
    assert sorted(protocol.__all__) == sorted(name for names in seen.values() for name in names)
    for module, names in seen.items():
        source = importlib.import_module(f"gimp_inpaint.protocol.{module}")
        assert all(getattr(protocol, name) is getattr(source, name) for name in names), module
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = protocol.nonexistent


def test_the_facts_the_help_shows_are_those_of_their_modules():
    """--help shows them without importing their modules, from copies in client.cli."""
    assert cli.DEFAULT_URL == connection.DEFAULT_URL
    assert cli.APP_NAME == APP_NAME
    assert cli.MAX_IMAGE_SIDE ** 2 == MAX_IMAGE_PIXELS


def test_output_paths_number_variants(tmp_path):
    out = tmp_path / "filled.png"
    assert cli.output_paths(out, 1) == [out]
    assert cli.output_paths(out, 3) == [tmp_path / "filled-1.png", tmp_path / "filled-2.png", tmp_path / "filled-3.png"]


@pytest.fixture
def inputs(tmp_path):
    """The astronaut photo and a mask of a 40×30 patch of the flag, as PNG files."""
    image_path, mask_path = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(data.astronaut()).save(image_path)
    mask = np.zeros((512, 512), np.uint8)
    mask[100:130, 20:60] = 255
    Image.fromarray(mask).save(mask_path)
    return image_path, mask_path


def test_missing_output_is_a_usage_error(inputs, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["fill", *map(str, inputs)])
    assert caught.value.code == 2
    assert "-o/--output" in capsys.readouterr().err


def test_negative_padding_is_a_usage_error(inputs, tmp_path, capsys):
    assert cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--padding", "-3"]) == 2
    assert "padding=-3 is outside [0, 1024]" in capsys.readouterr().err


def test_bad_inputs_exit_2_with_a_message_and_no_traceback(inputs, tmp_path, capsys):
    image_path, _ = inputs
    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small)
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(black)
    out = str(tmp_path / "o.png")
    assert cli.main(["fill", str(image_path), str(small), "-o", out, "--token", "t"]) == 2
    assert "The mask is 10×10 but the image is 512×512" in capsys.readouterr().err
    assert cli.main(["fill", str(image_path), str(black), "-o", out, "--token", "t"]) == 2
    assert "all black" in capsys.readouterr().err
    assert cli.main(["fill", str(tmp_path / "nope.png"), str(black), "-o", out, "--token", "t"]) == 2
    assert "Cannot read the input" in capsys.readouterr().err
    assert cli.main(["fill", *map(str, inputs), "-o", out, "--config-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "token" in err and "Traceback" not in err


def test_16_bit_grayscale_masks_are_refused_not_clipped(inputs, tmp_path, capsys):
    """Pillow opens 16-bit gray PNGs as I;16, whose convert("RGBA") clips every value over 255 to white: such a
    mask is refused (a picture is read at 16 bits, with OpenCV: tests/test_cli_high_bit_depth.py)."""
    image_path, _ = inputs
    deep = tmp_path / "deep.png"
    Image.fromarray(data.camera().astype(np.uint16) * 257).save(deep)  # 0…65535, mode I;16
    assert Image.open(deep).mode == "I;16"
    with pytest.raises(ValueError, match="8 bits per channel"):
        load_mask(deep)
    assert load_rgba(deep).dtype == np.uint16  # not clipped
    out = tmp_path / "o.png"
    assert cli.main(["fill", str(image_path), str(deep), "-o", str(out), "--token", "t"]) == 2
    assert "Convert it to 8 bits first" in capsys.readouterr().err
    assert not out.exists()


def test_out_of_range_settings_exit_2_before_connecting(inputs, tmp_path, capsys):
    code = cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--token", "t", "--strength", "2",
                     "--url", "ws://127.0.0.1:9"])
    assert code == 2
    assert "strength=2.0 is outside [0.01, 1]" in capsys.readouterr().err


@pytest.mark.timeout(20)
def test_unreachable_daemon_exits_1_and_says_how_to_start_it(inputs, tmp_path, capsys):
    url = f"ws://127.0.0.1:{free_port()}"
    code = cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--token", "t", "--url", url,
                     "--timeout", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert "gimp-inpaint-daemon" in err and url in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


@pytest.fixture
def daemon(tmp_path):
    config = tmp_path / "daemon-config"
    with running_daemon(config, [OpenCVEngine(), StepEngine("invert", steps=3)]) as (url, _):
        yield url, config


def test_fill_composes_each_variant_into_the_whole_picture(inputs, daemon, tmp_path, capsys):
    url, config = daemon
    out = tmp_path / "filled.png"
    code = cli.main(["fill", *map(str, inputs), "-o", str(out), "--url", url, "--config-dir", str(config),
                     "--engine", "invert", "--variants", "2", "--seed", "11", "--grow", "0", "--feather", "2",
                     "--no-color-match"])  # the engine's own (inverted) pixels, compared below
    assert code == 0
    captured = capsys.readouterr()
    assert f"{tmp_path / 'filled-1.png'}: seed 11" in captured.out
    assert f"{tmp_path / 'filled-2.png'}: seed 12" in captured.out
    assert "Generating… variant 1 of 2, step 3 of 3" in captured.err
    assert "Generating… variant 2 of 2, step 3 of 3" in captured.err
    original = load_rgba(inputs[0])
    result = load_rgba(tmp_path / "filled-1.png")
    assert result.shape == original.shape
    # the blend mask is the patch blurred with σ = 2 px, reaching 3 × (2 + 1) = 9 px (daemon.compositing):
    # 9 px inside the patch it is 255 (the engine's inverted pixels), 9 px outside 0 (the original, exactly)
    assert np.array_equal(result[109:121, 29:51, :3], 255 - original[109:121, 29:51, :3])
    ys, xs = np.nonzero(np.any(result != original, axis=2))
    assert ys.min() >= 100 - 9 and ys.max() < 130 + 9 and xs.min() >= 20 - 9 and xs.max() < 60 + 9
    assert np.array_equal(load_rgba(tmp_path / "filled-2.png"), result)  # the invert engine ignores the seed


def test_the_png_compression_flag_sets_the_level_of_the_written_files(inputs, daemon, tmp_path):
    url, config = daemon
    for level in (0, 9):
        assert cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / f"{level}.png"), "--url", url,
                         "--config-dir", str(config), "--engine", "invert", "--png-compression", str(level)]) == 0
    stored, small = tmp_path / "0.png", tmp_path / "9.png"
    assert np.array_equal(load_rgba(stored), load_rgba(small))
    assert stored.stat().st_size > 512 * 512 * 3 > small.stat().st_size  # level 0 stores the pixels as they are


def test_fill_with_opencv_removes_the_patch(inputs, daemon, tmp_path):
    url, config = daemon
    out = tmp_path / "filled.png"
    assert cli.main(["fill", *map(str, inputs), "-o", str(out), "--url", url, "--config-dir", str(config),
                     "--engine", "opencv"]) == 0
    original, result = load_rgba(inputs[0]), load_rgba(out)
    mask = load_mask(inputs[1]) == 255
    assert not np.array_equal(result[mask], original[mask])
    assert np.array_equal(result[:, 200:], original[:, 200:])  # far from the mask nothing moves


@pytest.mark.parametrize("command", ["fill", "status"])
def test_wrong_token_exits_1_with_the_hint_as_a_sentence_of_its_own(inputs, daemon, tmp_path, capsys, command):
    url, _ = daemon
    files = [*map(str, inputs), "-o", str(tmp_path / "o.png")] if command == "fill" else []
    assert cli.main([command, *files, "--url", url, "--token", "wrong"]) == 1
    message = _one_line_error(capsys)
    assert message.endswith(f" {cli.TOKEN_HINT}") and message.count(cli.TOKEN_HINT) == 1
    before_hint = message.removesuffix(f" {cli.TOKEN_HINT}").rstrip("”’\"'")
    assert before_hint[-1] in ".!?…"  # the daemon's sentence is closed before the hint starts


@pytest.mark.parametrize(("message", "joined"), [
    ("wrong token; see the daemon's log", "wrong token; see the daemon's log. Do this."),
    ("wrong token.", "wrong token. Do this."),
    ("wrong token (see the log)", "wrong token (see the log). Do this."),
    ("Is the token right?  ", "Is the token right? Do this."),
    ("It said “stop.”", "It said “stop.” Do this."),
    ("Refused (code 1009: …).", "Refused (code 1009: …). Do this."),
    ("Refused (code 1009: …)", "Refused (code 1009: …). Do this."),
    ("Wait!", "Wait! Do this."),
])
def test_add_hint_makes_two_sentences(message, joined):
    assert add_hint(message, "Do this.") == joined


def test_demo_writes_the_result_and_a_before_after_picture(daemon, tmp_path):
    url, config = daemon
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "-o", str(out), "--url", url, "--config-dir", str(config)]) == 0
    before = load_rgba(cli.DEMO_IMAGE)
    after = load_rgba(out)
    patch = load_mask(cli.DEMO_MASK) == 255
    assert patch.sum() > 5_000
    assert np.abs(after[patch].astype(int) - before[patch]).mean() > 20  # the purple patch is gone
    # grow 8 + blur reach 3 × (4 + 1) px around the disc (121…220, 336…435): the rest is untouched
    assert np.array_equal(after[:313], before[:313]) and np.array_equal(after[:, 243:], before[:, 243:])
    orange = before[450:500, 60:110, :3].reshape(-1, 3).mean(axis=0)  # the suit below the patch
    assert np.abs(after[patch][:, :3].mean(axis=0) - orange).max() < 40  # filled with suit colour
    side_by_side = load_rgba(tmp_path / "demo-before-after.png")
    assert side_by_side.shape == (512, 1024, 4)
    assert np.array_equal(side_by_side[:, :512], before) and np.array_equal(side_by_side[:, 512:], after)


def test_status_lists_the_engines_and_finds_the_port_in_daemon_toml(daemon, capsys):
    url, config = daemon
    (config / "daemon.toml").write_text(f"port = {url.rsplit(':', 1)[1]}\n")
    assert cli.main(["status", "--config-dir", str(config)]) == 0  # no --url: the port comes from daemon.toml
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("gimp-inpaint daemon ") and f"at {url} on cpu" in out[0]
    assert out[1:] == ["  ENGINE  FAMILY  MODEL   LORAS  EMBEDDINGS  REFINER  LICENCE                            STATE",
                       "  opencv  opencv  telea   -      -           no       Apache 2.0 (OpenCV 4.5 and later)  "
                       "available; cv2.inpaint (Telea), radius 3 px",
                       "  invert  test    invert  -      -           no       -                                  "
                       "available"]


def test_engine_table_shows_family_loras_embeddings_refiner_licence_and_state():
    lines = cli.engine_table([
        EngineInfo("sdxl-inpaint", "diffusers", "diffusers/sdxl-1.0-inpainting-0.1", True, True,
                   family="sdxl-inpaint", loras=["pixel-art", "detail"], embeddings=["<cat-toy>"], refiner=True,
                   licence="CreativeML Open RAIL++-M"),
        EngineInfo("sd15", "diffusers", "runwayml/sd-inpainting", False, True, "pip install torch",
                   family="sd-inpaint"),
        EngineInfo("fill", "diffusers", "black-forest-labs/FLUX.1-Fill-dev", True, True, family="flux-fill",
                   licence="FLUX.1 [dev] Non-Commercial License", non_commercial=True),
    ])
    assert lines == [
        "ENGINE        FAMILY        MODEL                              LORAS              EMBEDDINGS  REFINER  "
        "LICENCE                                                       STATE",
        "sdxl-inpaint  sdxl-inpaint  diffusers/sdxl-1.0-inpainting-0.1  pixel-art, detail  <cat-toy>   yes      "
        "CreativeML Open RAIL++-M                                      available",
        "sd15          sd-inpaint    runwayml/sd-inpainting             -                  -           no       "
        "-                                                             unavailable: pip install torch",
        "fill          flux-fill     black-forest-labs/FLUX.1-Fill-dev  -                  -           no       "
        "FLUX.1 [dev] Non-Commercial License, non-commercial use only  available",
    ]


def test_fill_options_reach_the_engine_and_every_stage_is_printed(inputs, tmp_path, capsys):
    engine = LoadingEngine()
    with running_daemon(tmp_path / "config", [engine]) as (url, token):
        code = cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--url", url, "--token", token,
                         "--seed", "3", "--scheduler", "euler_a", "--lora", "detail=0.75", "--lora", "style",
                         "--refiner-strength", "0.2", "--controlnet-scale", "0.5"])
    assert code == 0
    [job] = engine.jobs
    options = job.options
    assert (job.seed, options.scheduler, options.loras, options.refiner_strength,
            options.controlnet_conditioning_scale) == (3, Scheduler.EULER_A, {"detail": 0.75, "style": 1.0}, 0.2, 0.5)
    err = capsys.readouterr().err.splitlines()
    assert err[err.index("Downloading the model… 0 % (0.0 of 3.0 MB)") + 1:] == [
        "Downloading the model… 50 % (1.5 of 3.0 MB)", "Downloading the model… 100 % (3.0 of 3.0 MB)",
        "Loading the model…", *(f"Generating… step {step} of 3" for step in range(4)), "Adding the result layers…"]


@pytest.mark.parametrize(("options", "words"), [
    (["--lora", "detail=lots"], "Cannot read the LoRA “detail=lots”"),
    (["--lora", "a", "--lora", "a=0.5"], "“a” is named twice"),
    (["--lora", "a=9"], "the weight of LoRA 'a'=9.0 is outside [-4, 4]"),
    (["--refiner-strength", "1"], "refiner_strength=1.0 is outside [0, 0.99]"),
    (["--controlnet-scale", "3"], "controlnet_conditioning_scale=3.0 is outside [0, 2]"),
    (["--controlnet-conditioning-scale", "3"], "controlnet_conditioning_scale=3.0 is outside [0, 2]"),
])
def test_bad_options_exit_2_before_connecting(inputs, tmp_path, capsys, options, words):
    code = cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--token", "t",
                     "--url", "ws://127.0.0.1:9", *options])
    assert code == 2
    assert words in capsys.readouterr().err


def test_an_unknown_scheduler_is_refused_by_argparse(inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--scheduler", "karras"])
    assert caught.value.code == 2
    assert "invalid choice: 'karras'" in capsys.readouterr().err


@pytest.mark.timeout(20)
def test_status_exits_1_when_no_daemon_answers(tmp_path, capsys):
    config = tmp_path / "config"
    config.mkdir()
    (config / "token").write_text("t\n")
    (config / "daemon.toml").write_text(f"port = {free_port()}\n")
    assert cli.main(["status", "--config-dir", str(config), "--timeout", "2"]) == 1
    assert "Cannot reach the gimp-inpaint daemon" in capsys.readouterr().err


def test_a_daemon_toml_without_a_fixed_port_needs_url(tmp_path, capsys):
    (tmp_path / "daemon.toml").write_text("port = 0\n")
    assert cli.main(["status", "--config-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "sets port = 0" in err and "--url" in err


def _fill_args(image: Path, mask: Path, out: Path, url: str = "ws://127.0.0.1:9") -> list[str]:
    """``fill`` arguments that reach ``url`` (default: a port where nothing listens) with a dummy token."""
    return ["fill", str(image), str(mask), "-o", str(out), "--token", "t", "--url", url, "--timeout", "2"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The error line that ends a refused command's stderr (after any progress lines), without its
    ``gimp-inpaint: error: `` prefix; fails on a traceback or when the error is not the last line."""
    err = capsys.readouterr().err
    *_, last = err.splitlines()
    assert "Traceback" not in err and err.count("gimp-inpaint: error: ") == 1, err
    assert last.startswith("gimp-inpaint: error: "), err
    return last.removeprefix("gimp-inpaint: error: ")


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
@pytest.mark.parametrize("command", ["fill", "status"])
def test_a_malformed_url_exits_2_with_one_line(inputs, tmp_path, capsys, command, url, reason):
    files = [*map(str, inputs), "-o", str(tmp_path / "o.png")] if command == "fill" else []
    assert cli.main([command, *files, "--token", "t", "--url", url]) == 2
    message = _one_line_error(capsys)
    assert message.startswith(f"“{url}” is not a WebSocket URL") and reason in message


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "-1", "0", "-0", "soon"])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused_by_argparse(tmp_path, capsys, timeout):
    with pytest.raises(SystemExit) as caught:
        cli.main(["status", "--token", "t", "--url", "ws://127.0.0.1:9", f"--timeout={timeout}"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --timeout: must be a positive, finite number of seconds, got {timeout!r}" in err
    assert "Traceback" not in err


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A 1×1 gray PNG whose header (IHDR) claims ``width``×``height`` pixels: a decompression bomb's signature,
    tiny on disk. Pillow reads the size from the header when it opens the file."""
    Image.new("L", (1, 1)).save(path)
    png = bytearray(path.read_bytes())
    png[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16: width, height, …
    png[29:33] = struct.pack(">I", zlib.crc32(png[12:29]))  # the CRC of the chunk type and its 13 data bytes
    path.write_bytes(png)
    return path


@pytest.mark.parametrize(("which", "width", "height"), [
    ("image", 8193, 8192),  # one column over the limit, below Pillow's own warning threshold
    ("image", 10_000, 10_000),  # over Pillow's DecompressionBombWarning threshold (89 478 485 pixels)
    ("image", 20_000, 20_000),  # over its DecompressionBombError threshold (twice that)
    ("mask", 20_000, 20_000),
])
def test_an_image_over_the_pixel_limit_is_refused_with_one_line(inputs, tmp_path, capsys, which, width, height):
    image, mask = inputs
    bomb = _png_claiming(tmp_path / "bomb.png", width, height)
    with pytest.raises(ValueError, match=r"bomb\.png has more than 67,108,864 pixels"):
        (load_rgba if which == "image" else load_mask)(bomb)
    out = tmp_path / "o.png"
    assert cli.main(_fill_args(bomb if which == "image" else image, bomb if which == "mask" else mask, out)) == 2
    message = _one_line_error(capsys)
    assert message == (f"Cannot read the input: {bomb} has more than 67,108,864 pixels (8192×8192), the most "
                       f"gimp-inpaint reads from a file; scale it down first, or fill it in GIMP.")
    assert not out.exists()


def test_the_pixel_limit_is_four_crops_at_the_daemons_default_limit():
    assert MAX_IMAGE_PIXELS == 4 * 4096 * 4096 < Image.MAX_IMAGE_PIXELS  # Pillow never warns about a readable file


@pytest.fixture
def patch_mask() -> np.ndarray:
    """The bundled mask of the astronaut's mission patch (0 or 255), 512×512."""
    mask = load_mask(cli.DEMO_MASK)
    assert set(np.unique(mask)) == {0, 255}
    return mask


def _alpha_drawn(mask: np.ndarray, mode: str, colour: int) -> Image.Image:
    """``mask`` drawn only in the alpha channel of a ``mode`` image whose colour is ``colour`` everywhere."""
    colour_bands = [np.full(mask.shape, colour, np.uint8)] * (3 if mode == "RGBA" else 1)
    return Image.fromarray(np.dstack([*colour_bands, mask]), mode)


@pytest.mark.parametrize("make", [
    pytest.param(lambda mask: _alpha_drawn(mask, "RGBA", 255), id="white-RGBA-alpha-drawn"),
    pytest.param(lambda mask: _alpha_drawn(mask, "RGBA", 0), id="black-RGBA-alpha-drawn"),
    pytest.param(lambda mask: _alpha_drawn(mask, "LA", 255), id="white-LA-alpha-drawn"),
    pytest.param(lambda mask: Image.fromarray(np.dstack([mask] * 3 + [np.full(mask.shape, 255, np.uint8)])),
                 id="opaque-RGBA-drawn-white"),
    pytest.param(lambda mask: Image.fromarray(np.dstack([mask] * 4)), id="RGBA-white-opaque-on-transparent-black"),
    pytest.param(lambda mask: Image.fromarray(mask), id="L"),
])
def test_a_mask_reads_as_white_or_opaque_is_fill(patch_mask, tmp_path, make):
    path = tmp_path / "mask.png"
    make(patch_mask).save(path)
    assert np.array_equal(load_mask(path), patch_mask)


def test_a_mask_drawn_in_its_alpha_channel_fills_like_the_same_mask_in_gray(daemon, tmp_path, patch_mask):
    url, config = daemon
    gray, alpha = tmp_path / "gray.png", tmp_path / "alpha.png"
    Image.fromarray(patch_mask).save(gray)
    _alpha_drawn(patch_mask, "RGBA", 255).save(alpha)
    for mask, out in ((gray, tmp_path / "from-gray.png"), (alpha, tmp_path / "from-alpha.png")):
        assert cli.main(["fill", str(cli.DEMO_IMAGE), str(mask), "-o", str(out), "--url", url, "--config-dir",
                         str(config), "--engine", "opencv"]) == 0
    before, result = load_rgba(cli.DEMO_IMAGE), load_rgba(tmp_path / "from-alpha.png")
    assert np.abs(result[patch_mask == 255].astype(int) - before[patch_mask == 255]).mean() > 20  # filled
    assert np.array_equal(result, load_rgba(tmp_path / "from-gray.png"))


STORED_FOR = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_270}
"""How a camera stores an upright picture for each EXIF orientation 2…8 (the inverse of what a viewer applies)."""


def _save_with_orientation(pixels: np.ndarray, path: Path, orientation: int) -> Path:
    """Write ``pixels`` (upright) as the camera would with EXIF ``orientation``: stored turned, tagged to be shown
    upright."""
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    Image.fromarray(pixels).transpose(STORED_FOR[orientation]).save(path, exif=exif)
    return path


@pytest.mark.parametrize("orientation", sorted(STORED_FOR))
def test_exif_orientation_is_applied_to_image_and_mask(tmp_path, orientation):
    photo = data.astronaut()[:300]  # 512 wide, 300 high: every orientation changes the stored pixels
    image = _save_with_orientation(photo, tmp_path / "photo.png", orientation)
    assert not np.array_equal(np.asarray(Image.open(image)), photo)  # stored turned or mirrored
    assert np.array_equal(load_rgba(image)[..., :3], photo)
    gray = data.camera()[:300]
    assert np.array_equal(load_mask(_save_with_orientation(gray, tmp_path / "mask.png", orientation)), gray)


@pytest.mark.parametrize("tagged", [("image",), ("mask",), ("image", "mask")])
def test_a_phone_photo_and_its_mask_line_up_and_the_result_is_written_upright(daemon, tmp_path, tagged):
    url, config = daemon
    photo = data.astronaut()[:, :400]  # 400 wide, 512 high, as a phone in portrait shows it
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[100:130, 20:60] = 255
    upright = {"image": tmp_path / "photo.png", "mask": tmp_path / "mask.png"}
    Image.fromarray(photo).save(upright["image"])
    Image.fromarray(mask).save(upright["mask"])
    files = dict(upright)
    for name in tagged:
        files[name] = _save_with_orientation(photo if name == "image" else mask, tmp_path / f"tagged-{name}.png", 6)
    options = ["--url", url, "--config-dir", str(config), "--engine", "opencv"]
    for paths, out in ((upright, tmp_path / "reference.png"), (files, tmp_path / "o.png")):
        assert cli.main(["fill", str(paths["image"]), str(paths["mask"]), "-o", str(out), *options]) == 0
    result = load_rgba(tmp_path / "o.png")
    assert result.shape == (512, 400, 4)
    assert not np.array_equal(result[100:130, 20:60, :3], photo[100:130, 20:60])
    assert np.array_equal(result, load_rgba(tmp_path / "reference.png"))
    assert 0x0112 not in Image.open(tmp_path / "o.png").getexif()


@pytest.mark.parametrize("margin", [0, 2])  # 2: unmasked pixels that the mask's growth (4 px by default) covers
def test_a_mask_leaving_nothing_unmasked_is_refused_on_opencv_before_it_runs(daemon, tmp_path, capsys, margin):
    url, config = daemon
    mask = np.zeros((512, 512), np.uint8)
    mask[margin:512 - margin, margin:512 - margin] = 255
    Image.fromarray(mask).save(tmp_path / "white.png")
    out = tmp_path / "o.png"
    code = cli.main(["fill", str(cli.DEMO_IMAGE), str(tmp_path / "white.png"), "-o", str(out), "--url", url,
                     "--config-dir", str(config), "--engine", "opencv"])
    assert code == 2
    message = _one_line_error(capsys)
    assert message == ("The inpainting daemon reported an error: the opencv engine fills the mask from the pixels "
                       "around it, and this mask (grown by its grow setting) leaves none unmasked: leave some of "
                       "the picture unmasked, or use an engine that generates from a prompt")
    assert not out.exists()


def test_a_mask_that_leaves_some_of_the_picture_unmasked_is_filled_on_opencv(daemon, tmp_path):
    url, config = daemon
    mask = np.full((512, 512), 255, np.uint8)
    mask[:, 500:] = 0  # only a 12-pixel strip of context
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "o.png"
    assert cli.main(["fill", str(cli.DEMO_IMAGE), str(tmp_path / "mask.png"), "-o", str(out), "--url", url,
                     "--config-dir", str(config), "--engine", "opencv", "--grow", "0", "--feather", "0"]) == 0
    before, after = load_rgba(cli.DEMO_IMAGE), load_rgba(out)
    assert np.array_equal(after[:, 500:], before[:, 500:])
    assert not np.array_equal(after[:, :400], before[:, :400])


@pytest.mark.parametrize(("output", "variants", "reason"), [
    ("missing/o.png", 1, "No such file or directory"),
    ("missing/o.png", 3, "No such file or directory"),
    ("a-file.txt/o.png", 1, "Not a directory"),
    (".", 1, "Is a directory"),
    ("o.unknown", 1, "Pillow writes no format with the extension “.unknown”"),
    ("o", 1, "Pillow writes no format with no extension"),
    ("o.psd", 1, "Pillow writes no format with the extension “.psd”"),  # Pillow reads PSD files only
])
def test_an_output_that_cannot_be_written_is_refused_before_connecting(inputs, tmp_path, capsys, output, variants,
                                                                       reason):
    (tmp_path / "a-file.txt").write_text("not a folder\n")
    out = tmp_path / output
    first = cli.output_paths(out, variants)[0]
    assert cli.main([*_fill_args(*inputs, out), "--variants", str(variants)]) == 2  # nothing listens at the URL
    message = _one_line_error(capsys)
    assert message.startswith(f"Cannot write {first}: ") and reason in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file.txt", "mask.png", "photo.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_output_in_a_read_only_folder_is_refused_before_connecting(inputs, tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    assert cli.main(_fill_args(*inputs, folder / "o.png")) == 2
    assert "Permission denied" in _one_line_error(capsys)


def test_the_demos_output_is_checked_before_connecting(tmp_path, capsys):
    out = tmp_path / "missing" / "demo.png"
    assert cli.main(["demo", "-o", str(out), "--token", "t", "--url", "ws://127.0.0.1:9"]) == 2
    assert _one_line_error(capsys).startswith(f"Cannot write {out}: ")


def test_an_existing_output_is_left_as_it_was_by_the_check(inputs, tmp_path):
    out = tmp_path / "o.png"
    out.write_bytes(b"an earlier result")
    assert cli.main(_fill_args(*inputs, out)) == 1  # the check passed; nothing listens at the URL
    assert out.read_bytes() == b"an earlier result"
