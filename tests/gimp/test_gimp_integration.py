"""The plug-in in a real GIMP 3.0 and 3.2: installed by the project's installer, talking to a real daemon.

Every test runs once per chroot of :data:`gimp_harness.RELEASES` (Debian trixie: GIMP 3.0, forky: GIMP 3.2; the
test id says which, e.g. ``[gimp3.2-forky-opencv]``) and checks the GIMP version the batch reports.
Each test starts ``python -m gimp_inpaint.daemon`` on a free port, installs the plug-in into a fresh folder with
``python -m gimp_inpaint.installer install --url <that daemon>``, and runs a batch file in GIMP 3 (see
:mod:`gimp_harness`) that selects a feathered ellipse on a real photo (the mission patch of
``skimage.data.astronaut()``), runs ``python-fu-gimp-inpaint`` NONINTERACTIVE and dumps the result.
The opencv run asks for one variant; the tiny diffusers run for two (two layers, variant 1 on top, the
seeds in their names, pixels that differ), then repeats variant 1 with the default scheduler (identical
pixels) and with Euler (different pixels: the dialog's scheduler reached the pipeline), both with Sample merged
off (the source layer alone, the off path of that argument).
Issue 8's cases: a layer smaller than the fill and transparent stripes storing black or a cleared red (no dark or
red streak, nothing outside the selection changes, with the default Sample merged), no selection (refused, in the
GUI before the dialog opens) and the largest seed the daemon can pick typed into the Seed argument.
The cached-start run starts GIMP twice on one install, the way a user's GIMP runs every day after the day of the
install: the first start registers the procedure from the plug-in and writes ``pluginrc``, the second takes the
registration from ``pluginrc``, which hands the empty-string defaults over as ``None``. It sets no string
argument (prompt, negative prompt, engine, LoRAs), so the plug-in must read those as their defaults.
The chroot's Python has no msgpack or websockets: the plug-in runs on what the installer vendors.

Undo: GIMP's procedure database can neither undo nor count undo steps (its image-undo procedures are
group start/end, freeze/thaw, enable/disable and is-enabled), so the console run checks only what a
plug-in can see (undo still enabled, the image dirty, no undo group left open). The GUI test presses
Ctrl+Z and then Ctrl+Y once each in a real GIMP window (``gimp-3.0``, ``gimp-3.2``) on Xvfb: one Undo must
remove exactly the fill (layer and mask together, nothing before it), one Redo must bring it back.

``GIMP_INPAINT_WRITE_DOCS=1`` also writes the README picture ``docs/images/before-after.png`` from the
opencv run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from gimp_harness import RELEASES, GimpChroot, RunResult, press_keys, read_line_within, xvfb
from gimp_inpaint.client.fill import NO_SELECTION
from gimp_inpaint.plugin_gimp.arguments import gimp_default, procedure_arguments
from gimp_inpaint.protocol import SEED_MAX, Rect, context_crop, feather_reach
from PIL import Image, ImageDraw, ImageFont

pytestmark = pytest.mark.gimp

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ELLIPSE = (116, 330, 112, 112)
"""x, y, width, height (pixels) of an ellipse around the round mission patch (and the ring of fabric around it)
on the astronaut's suit."""
SELECTION_FEATHER = 8.0
"""Radius (pixels) of ``Gimp.Selection.feather`` applied to the ellipse, so the selection has soft edges."""
SEED = 1234
GIMP_TIMEOUT = 300
"""Seconds allowed for one GIMP run; a warm run takes 3–10 s, the first diffusers request adds the model load."""
IMAGE_WINDOW = "RGB color"
"""Part of the title of GIMP's image window ("[Untitled]-1.0 (RGB color 8-bit …) 512x512 – GIMP")."""
UNDO_CLEANUP_WARNING = "left image undo in inconsistent state"
"""GIMP's message (app/plug-in/gimpplugin-cleanup.c) when a plug-in returns with an undo group still open."""
DOCS_PICTURE = REPO / "docs" / "images" / "before-after.png"
DOCS_REGION = (0, 192, 320, 320)
"""x, y, width, height of the astronaut photo shown in the README picture (the patch and its surroundings)."""
DOCS_SIDE = 384
"""Pixels per half of the README picture (before | after: 2 × 384 wide)."""

DAEMON_WITHOUT_DIFFUSERS = ("import runpy, sys; sys.modules['diffusers'] = None; "
                            "runpy.run_module('gimp_inpaint.daemon', run_name='__main__', alter_sys=True)")
"""``python -c`` code running the daemon as if the diffusers extra were not installed: with ``diffusers`` blocked in
``sys.modules``, :func:`daemon.engines.diffusers_engine.diffusers_available` is false, so the daemon offers no
default model and its engines are migan and opencv; migan, the first, is the one an empty ``engine`` argument gets."""


@dataclass(frozen=True)
class Installed:
    """A plug-in folder installed for one test, and the daemon it talks to."""

    plugin_dir: Path
    url: str
    daemon_log: Path


@contextmanager
def installed_plugin(tmp_path: Path, models: dict[str, Path], diffusers: bool = True) -> Iterator[Installed]:
    """Start ``python -m gimp_inpaint.daemon --no-tray --port 0`` serving ``models`` (plus opencv), read its URL
    from the listening line, install the plug-in for that URL into ``tmp_path/plug-ins``; stop the daemon at the end.

    Without ``diffusers`` the daemon runs as :data:`DAEMON_WITHOUT_DIFFUSERS`: migan and opencv are its engines."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    log = tmp_path / "daemon.stderr"
    daemon_module = ["-m", "gimp_inpaint.daemon"] if diffusers else ["-c", DAEMON_WITHOUT_DIFFUSERS]
    argv = [sys.executable, *daemon_module, "--no-tray", "--port", "0", "--config-dir", str(config_dir)]
    for name, folder in models.items():
        argv += ["--model", f"{name}={folder}"]
    with log.open("w") as stderr:
        daemon = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = read_line_within(daemon.stdout, 60)
        prefix = "gimp-inpaint daemon listening on "
        assert line.startswith(prefix), f"the daemon printed {line!r}; stderr:\n{log.read_text()}"
        url = line[len(prefix):].strip()
        plugin_dir = tmp_path / "plug-ins"
        done = subprocess.run([sys.executable, "-m", "gimp_inpaint.installer", "install",
                               "--plugin-dir", str(plugin_dir), "--config-dir", str(config_dir), "--url", url,
                               "--no-shortcut"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"the installer failed:\n{done.stdout}{done.stderr}"
        yield Installed(plugin_dir, url, log)
    finally:
        daemon.terminate()
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        daemon.stdout.close()


def write_job(io: Path, arguments: dict, **extra: object) -> None:
    """Write the photo (``skimage.data.astronaut()``, 512×512 RGB) and ``job.json`` (:mod:`batch_inpaint`; ``extra``
    may replace the ellipse) into ``io``."""
    io.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(io / "photo.png")
    job = {"image": "photo.png", "ellipse": list(ELLIPSE), "selection_feather": SELECTION_FEATHER,
           "arguments": arguments, **extra}
    (io / "job.json").write_text(json.dumps(job))


def raw(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """A raw ``u8`` dump of the batch as an H×W×C array (H×W when ``channels`` is 1)."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    return data.reshape((height, width, channels) if channels > 1 else (height, width))


def failure_text(result: RunResult, installed: Installed) -> str:
    """GIMP's output and the daemon's log, for assertion messages."""
    return f"{result.describe()}\n--- daemon stderr ---\n{installed.daemon_log.read_text()}"


def assert_gimp_version(chroot: GimpChroot, summary: dict) -> None:
    """The batch ran in the chroot's GIMP: ``Gimp.version()`` (``summary["gimp_version"]``) is the installed
    package's version, of the series the chroot's release carries (:data:`gimp_harness.RELEASES`)."""
    seen = summary["gimp_version"]
    assert seen == chroot.gimp_version(), f"the batch ran GIMP {seen}, the chroot has {chroot.gimp_version()}"
    assert seen.startswith(RELEASES[chroot.release] + "."), f"{chroot.release} ran GIMP {seen}"


def engine_arguments(engine: str) -> dict:
    """The procedure's arguments for ``engine`` (GIMP names). opencv runs with ``grow = feather = 0``, so the
    blend mask may be non-zero only inside the selection (the selection's own feathering is the soft edge);
    the diffusers run keeps the defaults 4 and 12 and asks for two variants."""
    common = {"engine": engine, "seed": SEED, "padding": 32, "num-variants": 1, "strength": 1.0}
    if engine == "opencv":
        return {**common, "grow": 0, "feather": 0}
    return {**common, "grow": 4, "feather": 12, "num-inference-steps": 2, "guidance-scale": 7.5,
            "prompt": "orange fabric", "negative-prompt": "text", "num-variants": 2}


SCHEDULER_REPEATS = [{"num-variants": 1, "sample-merged": False},
                     {"num-variants": 1, "scheduler": "euler", "sample-merged": False}]
"""The diffusers run's repeats (:mod:`batch_inpaint`): one variant with the same seed, first with the model's
default scheduler (it must reproduce variant 1: the pipeline is deterministic), then with Euler instead of the
tiny model's PNDM (it must not: the plug-in's scheduler choice reached the pipeline). Both read the source layer
alone (Sample merged off): the picture the user sees now holds the first run's layers, the photo layer does not."""


@pytest.mark.parametrize(("engine", "starts"), [
    pytest.param("opencv", 1, id="opencv"),
    pytest.param("tiny", 1, id="tiny", marks=pytest.mark.diffusers),
    pytest.param("opencv", 2, id="opencv-cached-start"),
])
def test_generative_fill_in_gimp(gimp_chroot: GimpChroot, engine: str, starts: int, tmp_path: Path,
                                 request: pytest.FixtureRequest) -> None:
    """Run the procedure in ``starts`` GIMP starts on one install; the last run's result is checked in detail.
    With two starts no string argument is set: the engine is the daemon's first, migan (no diffusers; with no
    network here it fills with OpenCV, daemon.engines.migan)."""
    models = {"tiny": request.getfixturevalue("tiny_model")} if engine == "tiny" else {}
    arguments = engine_arguments(engine)
    if starts > 1:
        arguments = {name: value for name, value in arguments.items() if not isinstance(value, str)}
    variants = arguments["num-variants"]
    io = tmp_path / "io"
    write_job(io, arguments, repeats=SCHEDULER_REPEATS if engine == "tiny" else [])
    with installed_plugin(tmp_path, models, diffusers="engine" in arguments) as installed:
        for start in range(starts):
            result = gimp_chroot.run_batch(HERE / "batch_inpaint.py", io, ["/mnt/io/job.json"],
                                           plugin_dirs=[installed.plugin_dir], timeout=GIMP_TIMEOUT)
            print(f"[gimp] {engine}: GIMP run {start + 1} of {starts}: {result.seconds:.1f} s")
            assert result.returncode == 0, failure_text(result, installed)
            summary = result.summary()
            assert summary["procedure_exists"], failure_text(result, installed)
            assert_gimp_version(gimp_chroot, summary)
            # the first start after the install registers the procedure from the plug-in, later ones from pluginrc
            assert set(summary["unset_strings"].values()) <= ({""} if start == 0 else {None}), summary["unset_strings"]
            assert summary["status"] == "success", \
                f"python-fu-gimp-inpaint failed: {summary['message']}\n{failure_text(result, installed)}"
            for repeat in summary["repeats"]:
                assert repeat["status"] == "success", f"{repeat['message']}\n{failure_text(result, installed)}"
    if starts > 1:  # the cached start really left the string arguments to the plug-in's defaults
        assert {"prompt", "negative-prompt", "engine", "loras"} <= set(summary["unset_strings"])
    # what GIMP registered is the options table: names, defaults, ranges (a cached start reads "" back as None)
    registered = [(spec["name"], "" if spec["default"] is None else spec["default"], spec["minimum"], spec["maximum"])
                  for spec in summary["procedure_specs"]]
    ranged = (int, float)  # a number's range; LoRAs are text in GIMP (the record checks their weights)
    assert registered == [(spec.argument, gimp_default(spec), *((spec.minimum, spec.maximum) if spec.type in ranged
                                                                else (None, None)))
                          for spec in procedure_arguments()]
    print(f"[gimp] {engine}: the procedure ran {summary['procedure_seconds']:.2f} s inside GIMP")

    # the layer stack: one new RGBA layer per variant, directly above the source, variant 1 (seed SEED) on top,
    # each with a layer mask
    source = summary["source"]
    assert summary["layers_before"] == 1
    assert [layer["id"] for layer in summary["layers_after"]][variants:] == [source["id"]]
    new_layers = summary["new_layers"]
    assert summary["layers_after"][:variants] == new_layers
    label = arguments.get("prompt") or arguments.get("engine") or "migan"  # no engine argument: the daemon's first
    mode = "fill" if arguments.get("prompt") else "remove"  # auto's choice: the ellipse is far from the edges
    assert [layer["name"] for layer in new_layers] == [f"Generative fill: {label} ({mode}, seed {SEED + k})"
                                                       for k in range(variants)]
    for k, new in enumerate(new_layers):
        assert (new["parent"], new["position"]) == (source["parent"], source["position"] + k)
        assert new["has_mask"] and new["has_alpha"] and new["visible"]
        assert (new["mode"], new["opacity"]) == ("normal", 100.0)

    # geometry: every layer is the same box inside the context crop of the selection's bounds (protocol.context_crop
    # with the margin the grown, feathered mask needs): the bounding box of its blend mask, which the daemon sends
    width, height = summary["image_width"], summary["image_height"]
    reach = arguments["grow"] + feather_reach(arguments["feather"])
    crop = context_crop(Rect(*summary["selection_bounds"]), width, height, arguments["padding"] + reach)
    box = Rect(new_layers[0]["x"], new_layers[0]["y"], new_layers[0]["width"], new_layers[0]["height"])
    assert crop.x <= box.x and crop.y <= box.y and box.right <= crop.right and box.bottom <= crop.bottom
    for new in new_layers:
        assert (new["x"], new["y"], new["width"], new["height"]) == (box.x, box.y, box.width, box.height)

    # pixels
    original = np.asarray(Image.open(io / "photo.png").convert("RGB"))
    selection = raw(io / "selection.raw", height, width, 1)
    layers = [raw(io / f"layer_{n}.raw", box.height, box.width, 4) for n in range(variants)]
    masks = [raw(io / f"layer_{n}_mask.raw", box.height, box.width, 1) for n in range(variants)]
    composite = np.asarray(Image.open(io / "composite.png").convert("RGBA"))
    assert composite.shape == (height, width, 4) and (composite[..., 3] == 255).all()
    composite = composite[..., :3]
    source_after = raw(io / "source_after.raw", height, width, 4)
    assert summary["source_unchanged_in_gimp"] and summary["selection_unchanged"]
    np.testing.assert_array_equal(source_after[..., :3], original)     # the source layer is untouched

    window = (slice(box.y, box.bottom), slice(box.x, box.right))
    mask = masks[0]
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()  # the box is tight
    for other in masks[1:]:
        np.testing.assert_array_equal(other, mask)                      # one blend mask for every variant
    for layer in layers:  # each layer is the original, exactly, where its mask is 0, and opaque where it shows
        np.testing.assert_array_equal(layer[..., :3][mask == 0], original[window][mask == 0])
        assert (layer[..., 3][mask > 0] == 255).all()
    mask_full = np.zeros((height, width), np.uint8)
    mask_full[window] = mask
    assert (mask_full[selection == 255] > 0).all(), "the layer mask does not cover the whole selection"
    assert mask.max() == 255
    # outside the layer mask the composite is the original, exactly; the mask reaches at most grow + the
    # feather's reach beyond the selection (with grow = feather = 0: not beyond it at all)
    np.testing.assert_array_equal(composite[mask_full == 0], original[mask_full == 0])
    near = cv2.dilate((selection > 0).astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) > 0
    assert (mask_full[~near] == 0).all(), f"the layer mask reaches farther than {reach} px beyond the selection"
    np.testing.assert_array_equal(composite[~near], original[~near])
    # where the mask is full, GIMP shows the top layer's pixels (variant 1); inside the selection the picture changed
    full = mask_full == 255
    np.testing.assert_array_equal(composite[full], layers[0][..., :3][mask == 255])
    inside = selection == 255
    changed = (composite[inside] != original[inside]).any(axis=1)
    assert changed.mean() > 0.9, f"only {changed.mean():.0%} of the selected pixels changed"
    diff = np.abs(composite[inside].astype(int) - original[inside].astype(int)).mean()
    assert diff > 10, f"mean change inside the selection is only {diff:.1f} levels"
    inside_crop = inside[window]
    for a in range(variants):  # the variants' seeds differ, so do their pixels
        for b in range(a + 1, variants):
            differ = (layers[a][inside_crop] != layers[b][inside_crop]).any(axis=1).mean()
            assert differ > 0.5, f"variants {a + 1} and {b + 1} differ in only {differ:.0%} of the selection"

    if engine == "tiny":  # the scheduler choice reached the pipeline (SCHEDULER_REPEATS)
        for repeat in summary["repeats"]:  # GIMP makes a repeated name unique: "… (seed 1234) #1"
            [added] = repeat["new_layers"]
            assert added["name"].startswith(f"Generative fill: {label} ({mode}, seed {SEED})")
        again, euler = (raw(io / f"repeat_{k}_layer_0.raw", box.height, box.width, 4) for k in range(2))
        np.testing.assert_array_equal(again, layers[0])
        differ = (euler[inside_crop] != layers[0][inside_crop]).any(axis=1).mean()
        assert differ > 0.5, f"Euler changed only {differ:.0%} of the selection: the scheduler did not reach the model"

    # undo, as far as a plug-in can see it (the GUI test below presses Undo for real)
    assert summary["undo_enabled_before"] and summary["undo_enabled_after"]
    assert not summary["dirty_before"] and summary["dirty_after"]
    assert UNDO_CLEANUP_WARNING not in result.stderr

    if engine == "opencv" and os.environ.get("GIMP_INPAINT_WRITE_DOCS") == "1":
        write_docs_picture(original, composite, selection)


STRIPE_ELLIPSE = [305, 120, 80, 80]
"""An ellipse on a bright, nearly grey part of the photo (luma about 210), where a dark or red streak shows."""
STRIPE = [341, 0, 8, 512]
"""x, y, width, height of a fully transparent stripe through the middle of :data:`STRIPE_ELLIPSE`, top to
bottom."""
SMALL_LAYER = [50, 70, 300, 200]
"""x, y, width, height of the issue's RGBA layer, smaller than the image (a copy of the photo there)."""
CORNER_ELLIPSE = [300, 220, 120, 100]
"""An ellipse over the bottom right corner of :data:`SMALL_LAYER`, so partly outside it."""


def brightness(pixels: np.ndarray) -> np.ndarray:
    """Rec. 601 luma (0–255) of N×3 RGB pixels."""
    return pixels.astype(float) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("setup", [
    pytest.param({"small_layer": SMALL_LAYER, "ellipse": CORNER_ELLIPSE}, id="layer-smaller-than-the-fill"),
    pytest.param({"stripe": STRIPE, "stripe_colour": "black", "ellipse": STRIPE_ELLIPSE},
                 id="transparent-stripe-storing-black"),
    pytest.param({"stripe": STRIPE, "stripe_colour": "cleared", "ellipse": STRIPE_ELLIPSE},
                 id="stripe-cleared-over-red"),
])
def test_transparent_pixels_never_reach_the_fill(gimp_chroot: GimpChroot, setup: dict, tmp_path: Path) -> None:
    """Issue 8, items 13 and 14, on opencv with the default Sample merged: outside the selection the picture is
    unchanged (grow = feather = 0, so the fade is the selection's own), inside it the fill is opaque and as bright
    as its surroundings (no black from pixels outside the layer or the colour a transparent pixel stores), and no
    red comes back from a cleared stripe. The fill reads the picture without leaving an image open."""
    io = tmp_path / "io"
    write_job(io, engine_arguments("opencv"), **setup)
    with installed_plugin(tmp_path, {}, diffusers=False) as installed:
        result = gimp_chroot.run_batch(HERE / "batch_inpaint.py", io, ["/mnt/io/job.json"],
                                       plugin_dirs=[installed.plugin_dir], timeout=GIMP_TIMEOUT)
    assert result.returncode == 0, failure_text(result, installed)
    summary = result.summary()
    assert_gimp_version(gimp_chroot, summary)
    assert summary["status"] == "success", f"{summary['message']}\n{failure_text(result, installed)}"
    assert summary["open_images_after"] == summary["open_images_before"]
    before, after = (np.asarray(Image.open(io / name).convert("RGBA")).astype(int)
                     for name in ("composite_before.png", "composite.png"))
    selection = raw(io / "selection.raw", 512, 512, 1)
    outside = selection == 0
    np.testing.assert_array_equal(after[outside][:, 3], before[outside][:, 3])
    shown = outside & (before[..., 3] > 0)
    np.testing.assert_array_equal(after[shown], before[shown])
    inside = selection == 255
    assert (after[inside][:, 3] == 255).all(), "the fill is not opaque inside the selection"
    ring = (cv2.dilate(selection, np.ones((25, 25), np.uint8)) > 0) & outside & (before[..., 3] == 255)
    filled, around = brightness(after[inside][:, :3]), brightness(before[ring][:, :3])
    print(f"[gimp] {setup}: brightness inside {filled.mean():.1f}, around {around.mean():.1f}; "
          f"dark inside {(filled < 40).mean():.1%}, around {(around < 40).mean():.1%}")
    assert filled.mean() > 0.8 * around.mean(), "the fill is darker than its surroundings"
    assert (filled < 40).mean() < (around < 40).mean() + 0.05, "black appeared in the fill"
    if "stripe" in setup:  # along the stripe the fill looks like the fill beside it: no dark or red streak
        x, _, width, _ = STRIPE
        columns = np.zeros_like(inside)
        columns[:, x:x + width] = True
        beside = np.zeros_like(inside)
        beside[:, x - 3 * width:x - width] = beside[:, x + 2 * width:x + 4 * width] = True
        streak, next_to = (after[inside & where][:, :3].astype(float) for where in (columns, beside))
        redness = [pixels[:, 0] - pixels[:, 1:].mean(axis=1) for pixels in (streak, next_to)]
        print(f"[gimp] {setup}: along the stripe brightness {brightness(streak).mean():.1f}, redness "
              f"{redness[0].mean():.1f}; beside it {brightness(next_to).mean():.1f}, {redness[1].mean():.1f}")
        assert brightness(streak).mean() > 0.85 * brightness(next_to).mean(), "a dark streak along the stripe"
        assert redness[0].mean() < redness[1].mean() + 20, "a red streak along the stripe"


@pytest.mark.parametrize("run_mode", ["noninteractive", "interactive"])
def test_no_selection_is_refused_before_the_dialog(gimp_chroot: GimpChroot, run_mode: str,
                                                   request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Issue 8, item 16: without a selection the procedure fails with :data:`client.fill.NO_SELECTION`. The
    interactive run happens in the GUI (``gimp-3.x`` on Xvfb), where the dialog, had it opened, would wait for a
    click: the call returns at once instead, so the check came first."""
    io = tmp_path / "io"
    write_job(io, engine_arguments("opencv"), ellipse=None, run_mode=run_mode)
    if run_mode == "interactive":
        request.getfixturevalue("gui_tools")
    with (installed_plugin(tmp_path, {}, diffusers=False) as installed,
          nullcontext() if run_mode == "noninteractive" else xvfb() as display):
        result = gimp_chroot.run_batch(HERE / "batch_inpaint.py", io, ["/mnt/io/job.json"],
                                       plugin_dirs=[installed.plugin_dir], timeout=90, display=display)
    assert result.returncode == 0, failure_text(result, installed)
    summary = result.summary()
    assert_gimp_version(gimp_chroot, summary)
    assert (summary["status"], summary["message"]) == ("execution-error", NO_SELECTION)
    assert summary["new_layers"] == [] and summary["procedure_seconds"] < 30


def test_the_largest_seed_the_daemon_picks_can_be_typed_back(gimp_chroot: GimpChroot, tmp_path: Path) -> None:
    """Issue 8, item 15: the Seed argument takes :data:`protocol.messages.SEED_MAX`, the largest seed the daemon
    draws at random, and the layer name says it."""
    io = tmp_path / "io"
    write_job(io, {**engine_arguments("opencv"), "seed": SEED_MAX})
    with installed_plugin(tmp_path, {}, diffusers=False) as installed:
        result = gimp_chroot.run_batch(HERE / "batch_inpaint.py", io, ["/mnt/io/job.json"],
                                       plugin_dirs=[installed.plugin_dir], timeout=GIMP_TIMEOUT)
    assert result.returncode == 0, failure_text(result, installed)
    summary = result.summary()
    assert summary["status"] == "success", f"{summary['message']}\n{failure_text(result, installed)}"
    [layer] = summary["new_layers"]
    assert layer["name"] == f"Generative fill: opencv (remove, seed {SEED_MAX})"


def write_docs_picture(before: np.ndarray, after: np.ndarray, selection: np.ndarray) -> None:
    """Save :data:`DOCS_PICTURE`: :data:`DOCS_REGION` of ``before`` with the selection outlined in black and
    white (as GIMP's marching ants look), next to the same region of ``after``, each :data:`DOCS_SIDE` wide."""
    outlined = before.copy()
    contours, _ = cv2.findContours((selection >= 128).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outlined, contours, -1, (0, 0, 0), 3, lineType=cv2.LINE_AA)
    cv2.drawContours(outlined, contours, -1, (255, 255, 255), 1, lineType=cv2.LINE_AA)
    x, y, w, h = DOCS_REGION
    halves = [Image.fromarray(np.ascontiguousarray(picture[y:y + h, x:x + w])).resize(
        (DOCS_SIDE, DOCS_SIDE * h // w), Image.Resampling.LANCZOS) for picture in (outlined, after)]
    canvas = Image.new("RGB", (2 * DOCS_SIDE, halves[0].height))
    for n, half in enumerate(halves):
        canvas.paste(half, (n * DOCS_SIDE, 0))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default(size=18)
    for n, label in enumerate(("Before: feathered selection", "After: Generative Fill (opencv)")):
        draw.text((n * DOCS_SIDE + 10, 8), label, font=font, fill=(255, 255, 255), stroke_width=2,
                  stroke_fill=(0, 0, 0))
    DOCS_PICTURE.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(DOCS_PICTURE, optimize=True)


def test_generative_fill_is_one_undo_step(gimp_chroot: GimpChroot, gui_tools: None, tmp_path: Path) -> None:
    io = tmp_path / "io"
    wait = 60.0
    write_job(io, engine_arguments("opencv"), wait_seconds=wait)
    # xvfb() last: it ends first when something fails, and GIMP, losing its display, exits too
    with installed_plugin(tmp_path, {}) as installed, ThreadPoolExecutor(1) as pool, xvfb() as display:
        run = pool.submit(gimp_chroot.run_batch, HERE / "batch_undo.py", io, ["/mnt/io/job.json"],
                          plugin_dirs=[installed.plugin_dir],
                          timeout=GIMP_TIMEOUT, display=display)
        for ready, key in (("ready-undo", "ctrl+z"), ("ready-redo", "ctrl+y")):
            deadline = time.monotonic() + GIMP_TIMEOUT
            while not (io / ready).exists() and not run.done() and time.monotonic() < deadline:
                time.sleep(0.1)
            if run.done() or not (io / ready).exists():
                break
            press_keys(display, IMAGE_WINDOW, [key])
        result = run.result()
    print(f"[gimp] GUI undo run {result.seconds:.1f} s")
    assert result.returncode == 0, failure_text(result, installed)
    summary = result.summary()
    assert_gimp_version(gimp_chroot, summary)
    assert summary["status"] == "success", f"{summary['message']}\n{failure_text(result, installed)}"
    before, filled = summary["before"], summary["after_fill"]
    assert len(filled) == len(before) + 1 and filled[1:] == [{**before[0], "position": 1}]
    assert filled[0]["has_mask"]
    # one Undo: back to exactly the stack before the fill; the selection (two undo steps older) is kept
    assert summary["after_undo"] == before
    assert summary["selection_after_undo_unchanged"] and summary["source_after_undo_unchanged"]
    # one Redo: the layer is back, with its mask
    assert summary["after_redo"] == filled
    assert summary["selection_after_redo_unchanged"]
