"""client.imaging (compose exactness, planes, bounds) and the gimp-inpaint command line, end to end
against the real daemon server."""

from __future__ import annotations

import numpy as np
import pytest
from gimp_inpaint.client import cli
from gimp_inpaint.client.imaging import (
    array_from_plane,
    compose,
    load_mask,
    load_rgba,
    mask_bounds,
    plane_from_array,
    save_image,
)
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.protocol import EngineInfo, Rect
from PIL import Image
from running_daemon import LoadingEngine, StepEngine, free_port, running_daemon
from skimage import data

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


def test_negative_padding_is_a_usage_error(inputs, tmp_path):
    with pytest.raises(SystemExit) as caught:
        cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--padding", "-3"])
    assert caught.value.code == 2


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


def test_16_bit_grayscale_inputs_are_refused_not_clipped(inputs, tmp_path, capsys):
    """Pillow opens 16-bit gray PNGs as I;16, whose convert("RGBA") clips every value over 255 to white."""
    image_path, mask_path = inputs
    deep = tmp_path / "deep.png"
    Image.fromarray(data.camera().astype(np.uint16) * 257).save(deep)  # 0…65535, mode I;16
    assert Image.open(deep).mode == "I;16"
    with pytest.raises(ValueError, match="I;16 pixels"):
        load_rgba(deep)
    with pytest.raises(ValueError, match="8 bits per channel"):
        load_mask(deep)
    out = tmp_path / "o.png"
    assert cli.main(["fill", str(deep), str(mask_path), "-o", str(out), "--token", "t"]) == 2
    assert "deep.png has I;16 pixels" in capsys.readouterr().err
    assert cli.main(["fill", str(image_path), str(deep), "-o", str(out), "--token", "t"]) == 2
    assert "Convert it to 8 bits first" in capsys.readouterr().err
    assert not out.exists()


def test_out_of_range_settings_exit_2_before_connecting(inputs, tmp_path, capsys):
    code = cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--token", "t", "--strength", "2",
                     "--url", "ws://127.0.0.1:9"])
    assert code == 2
    assert "strength=2.0 is outside (0, 1]" in capsys.readouterr().err


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
                     "--engine", "invert", "--variants", "2", "--seed", "11", "--grow", "0", "--feather", "2"])
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


def test_fill_with_opencv_removes_the_patch(inputs, daemon, tmp_path):
    url, config = daemon
    out = tmp_path / "filled.png"
    assert cli.main(["fill", *map(str, inputs), "-o", str(out), "--url", url, "--config-dir", str(config),
                     "--engine", "opencv"]) == 0
    original, result = load_rgba(inputs[0]), load_rgba(out)
    mask = load_mask(inputs[1]) == 255
    assert not np.array_equal(result[mask], original[mask])
    assert np.array_equal(result[:, 200:], original[:, 200:])  # far from the mask nothing moves


def test_wrong_token_exits_1_with_a_hint(inputs, daemon, tmp_path, capsys):
    url, _ = daemon
    code = cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--url", url, "--token", "wrong"])
    assert code == 1
    assert "--token" in capsys.readouterr().err


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
    assert out[1:] == ["  ENGINE  FAMILY  MODEL   LORAS  EMBEDDINGS  REFINER  STATE",
                       "  opencv  opencv  telea   -      -           no       available; cv2.inpaint (Telea), "
                       "radius 3 px",
                       "  invert  test    invert  -      -           no       available"]


def test_engine_table_shows_family_loras_embeddings_refiner_and_state():
    lines = cli.engine_table([
        EngineInfo("sdxl-inpaint", "diffusers", "diffusers/sdxl-1.0-inpainting-0.1", True, True,
                   family="sdxl-inpaint", loras=["pixel-art", "detail"], embeddings=["<cat-toy>"], refiner=True),
        EngineInfo("sd15", "diffusers", "runwayml/sd-inpainting", False, True, "pip install torch",
                   family="sd-inpaint"),
    ])
    assert lines == [
        "ENGINE        FAMILY        MODEL                              LORAS              EMBEDDINGS  REFINER  STATE",
        "sdxl-inpaint  sdxl-inpaint  diffusers/sdxl-1.0-inpainting-0.1  pixel-art, detail  <cat-toy>   yes      "
        "available",
        "sd15          sd-inpaint    runwayml/sd-inpainting             -                  -           no       "
        "unavailable: pip install torch",
    ]


def test_fill_options_reach_the_engine_and_every_stage_is_printed(inputs, tmp_path, capsys):
    engine = LoadingEngine()
    with running_daemon(tmp_path / "config", [engine]) as (url, token):
        code = cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--url", url, "--token", token,
                         "--seed", "3", "--scheduler", "euler_a", "--lora", "detail=0.75", "--lora", "style",
                         "--refiner-strength", "0.2", "--controlnet-scale", "0.5"])
    assert code == 0
    [job] = engine.jobs
    assert (job.seed, job.scheduler, dict(job.loras), job.refiner_strength, job.controlnet_conditioning_scale) \
        == (3, "euler_a", {"detail": 0.75, "style": 1.0}, 0.2, 0.5)
    err = capsys.readouterr().err.splitlines()
    assert err[err.index("Downloading the model… 0 % (0.0 of 3.0 MB)") + 1:] == [
        "Downloading the model… 50 % (1.5 of 3.0 MB)", "Downloading the model… 100 % (3.0 of 3.0 MB)",
        "Loading the model…", *(f"Generating… step {step} of 3" for step in range(4)), "Adding the result layers…"]


@pytest.mark.parametrize(("options", "words"), [
    (["--lora", "detail=lots"], "Cannot read the LoRA “detail=lots”"),
    (["--lora", "a", "--lora", "a=0.5"], "“a” is named twice"),
    (["--lora", "a=9"], "the weight of LoRA 'a'=9.0 is outside [-4.0, 4.0]"),
    (["--refiner-strength", "1"], "refiner_strength=1.0 is outside [0, 1)"),
    (["--controlnet-scale", "3"], "controlnet_conditioning_scale=3.0 is outside [0.0, 2.0]"),
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
