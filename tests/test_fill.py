"""client.fill.run_fill and run_expand with a fake document (a layer with an offset over a real photo) and a fake
client; the fill mode that ``auto`` picks on the editor side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from gimp_inpaint.client.connection import ConnectionConfigError, DaemonError, DaemonUnavailable
from gimp_inpaint.client.document import Document, ResultLayer
from gimp_inpaint.client.expand import ExpandOptions, GrowSides
from gimp_inpaint.client.fill import (
    NO_SELECTION,
    TRANSPARENT_RGB,
    FillError,
    covers_transparent,
    fill_crop,
    layer_name,
    progress_text,
    run_expand,
    run_fill,
)
from gimp_inpaint.client.imaging import array_from_plane, plane_from_array
from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    SEED_MAX,
    CanvasExpansion,
    EditorOptions,
    EngineInfo,
    ErrorCode,
    Family,
    FillMode,
    FillOptions,
    InpaintRequest,
    ProtocolError,
    Rect,
    Scheduler,
    Stage,
    Variant,
    Welcome,
    parse_loras,
)
from skimage import data


class FakeDocument(Document):
    """A ``width × height`` image whose source layer (a crop of the astronaut photo) lies at ``layer_offset``,
    over an opaque ``background`` layer (the coffee photo) or over nothing."""

    def __init__(self, width: int = 400, height: int = 300, layer_offset: tuple[int, int] = (0, 0),
                 selection: Rect | None = None, background: bool = False) -> None:
        self.width, self.height = width, height
        self.offset = layer_offset
        photo = data.astronaut()
        self.layer = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])[:250, :350]  # 350×250 layer
        coffee = data.coffee()[:height, :width]
        self.background = np.dstack([coffee, np.full(coffee.shape[:2], 255, np.uint8)]) if background else None
        self.selection = np.zeros((height, width), np.uint8)
        if selection is not None:
            self.selection[selection.y:selection.bottom, selection.x:selection.right] = 255
        self.layers: list[ResultLayer] = []
        self.canvas: CanvasExpansion | None = None
        self.add_calls = 0
        self.progress_log: list[tuple[float, str]] = []
        self.messages: list[str] = []

    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def selection_bounds(self) -> Rect | None:
        ys, xs = np.nonzero(self.selection)
        if xs.size == 0:
            return None
        return Rect(int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))

    def read_rgba(self, rect: Rect) -> bytes:
        """Image coordinates → layer coordinates; outside the layer: transparent, like the GIMP adapter."""
        out = np.zeros((rect.height, rect.width, 4), np.uint8)
        ox, oy = self.offset
        x0, y0 = max(rect.x, ox), max(rect.y, oy)
        x1, y1 = min(rect.right, ox + self.layer.shape[1]), min(rect.bottom, oy + self.layer.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - rect.y:y1 - rect.y, x0 - rect.x:x1 - rect.x] = self.layer[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        return out.tobytes()

    def read_visible(self, rect: Rect) -> bytes:
        """The source layer over the background (its alpha is 0 or 255), or :meth:`Document.read_visible`."""
        if self.background is None:
            return super().read_visible(rect)
        layer = np.frombuffer(self.read_rgba(rect), np.uint8).reshape(rect.height, rect.width, 4)
        below = self.background[rect.y:rect.bottom, rect.x:rect.right]
        return np.where(layer[..., 3:] == 255, layer, below).tobytes()

    def read_mask(self, rect: Rect) -> bytes:
        return self.selection[rect.y:rect.bottom, rect.x:rect.right].tobytes()

    def add_result_layers(self, layers: Sequence[ResultLayer], canvas: CanvasExpansion | None = None) -> list[str]:
        self.add_calls += 1
        self.layers = list(layers)
        self.canvas = canvas
        return [layer.name for layer in layers]

    def progress(self, fraction: float, text: str) -> None:
        self.progress_log.append((fraction, text))

    def message(self, text: str) -> None:
        self.messages.append(text)


ENGINES = [EngineInfo("sd15-inpaint", "diffusers", "sd15", True, True, family=Family.SD_INPAINT, loras=["detail"]),
           EngineInfo("opencv", "opencv", "telea", True, False)]


INFERENCE_STEPS = ((0, 4, Stage.INFERENCE), (2, 4, Stage.INFERENCE), (4, 4, Stage.INFERENCE))


class FakeClient:
    """Answers like the daemon: each variant inverts the request's RGB; the blend mask is the request's mask; with
    ``box`` (a rect inside the crop, crop coordinates) only that box comes back, as the daemon sends it."""

    def __init__(self, max_pixels: int = 1 << 24, steps: Sequence[tuple[int, int, Stage]] = INFERENCE_STEPS,
                 error: Exception | None = None, box: Rect | None = None) -> None:
        self.welcome = Welcome(protocol_version=1, daemon_version="t", device="cpu", engines=ENGINES,
                               max_pixels=max_pixels)
        self.client_name = "fake-client/1"
        self.requests: list[InpaintRequest] = []
        self.steps = steps
        self.error = error
        self.box = box
        self.closed = False

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closed = True

    def inpaint(self, request, on_progress=None, should_cancel=None, on_preview=None) -> list[Variant]:
        self.requests.append(request)
        for step, total, stage in self.steps:
            on_progress(step, total, stage)
        if self.error is not None:
            raise self.error
        image = array_from_plane(request.image).copy()
        image[..., :3] = 255 - image[..., :3]
        mask = array_from_plane(request.mask)
        box = self.box or Rect(0, 0, request.image.width, request.image.height)
        image, mask = image[box.y:box.bottom, box.x:box.right], mask[box.y:box.bottom, box.x:box.right]
        seed = 40 if request.options.seed == -1 else request.options.seed
        return [Variant(job_id=request.job_id, index=k, x=request.x + box.x, y=request.y + box.y,
                        image=plane_from_array(image), mask=plane_from_array(mask), seed=seed + k,
                        timings={"total": 0.5}) for k in range(request.options.num_variants)]


def records(**params: object) -> tuple[FillOptions, EditorOptions]:
    """``params`` split into the two records by the options table's names."""
    editor = {name: value for name, value in params.items() if name in EDITOR_OPTIONS}
    return FillOptions(**{n: v for n, v in params.items() if n not in editor}), EditorOptions(**editor)


def fill(document: FakeDocument, client: FakeClient, **params: object) -> list[str]:
    return run_fill(document, lambda: client, *records(**params))


def test_layers_land_at_the_crop_offset_with_the_crop_size_and_the_daemons_pixels():
    document = FakeDocument(selection=Rect(150, 100, 40, 30))
    client = FakeClient()
    names = fill(document, client, prompt="a red balloon", seed=5, num_variants=2, grow=4, feather=12, padding=64)
    (request,) = client.requests
    # 40×30 box + (64 + 4 + feather_reach(12) = 39) px each side: x 43…297 (254 → 256, one more px left);
    # y −7…237 clipped to 0…237 (237 → 240, kept at the top border)
    assert fill_crop(Rect(150, 100, 40, 30), 400, 300, *records(padding=64)) == Rect(42, 0, 256, 240)
    assert (request.x, request.y, request.image.width, request.image.height) == (42, 0, 256, 240)
    assert request.options == FillOptions(engine="sd15-inpaint", prompt="a red balloon", seed=5, num_variants=2,
                                          grow=4, feather=12, fill_mode=FillMode.FILL)
    sent = array_from_plane(request.image)
    assert np.array_equal(sent, document.layer[0:240, 42:298])
    mask = array_from_plane(request.mask)
    assert mask.sum() == 40 * 30 * 255 and mask[100, 108] == 255 and mask[99, 108] == 0 and mask[100, 107] == 0
    assert names == ["Generative fill: a red balloon (fill, seed 5)", "Generative fill: a red balloon (fill, seed 6)"]
    assert document.canvas is None
    assert document.add_calls == 1 and client.closed
    for layer in document.layers:
        assert (layer.x, layer.y, layer.width, layer.height) == (42, 0, 256, 240)
        assert layer.rgba[:3] == bytes(255 - document.layer[0, 42, :3])
        assert layer.mask == request.mask.data and layer.timings == {"total": 0.5}


def test_a_variant_box_becomes_a_layer_of_that_size_at_its_place():
    """The daemon sends only the blend mask's box (protocol 4): the layer is that box, at its place in the image."""
    document = FakeDocument(selection=Rect(150, 100, 40, 30))
    client = FakeClient(box=Rect(60, 70, 50, 40))
    fill(document, client, padding=64)
    (request,) = client.requests
    (layer,) = document.layers
    assert (layer.x, layer.y, layer.width, layer.height) == (request.x + 60, request.y + 70, 50, 40)
    expected = 255 - document.layer[request.y + 70:request.y + 110, request.x + 60:request.x + 110, :3]
    assert np.array_equal(np.frombuffer(layer.rgba, np.uint8).reshape(40, 50, 4)[..., :3], expected)


def test_crop_is_clamped_at_the_image_border():
    document = FakeDocument(selection=Rect(0, 290, 10, 10))
    client = FakeClient()
    fill(document, client, padding=64)
    (request,) = client.requests
    assert (request.x, request.y) == (0, 180)
    # 10 px + 107 px margin (64 + 4 + feather_reach(12)) → 117 → 120, slid up from the bottom edge
    assert (request.image.width, request.image.height) == (120, 120)
    assert request.y + request.image.height == 300
    assert (document.layers[0].x, document.layers[0].y) == (0, 180)


def test_pixels_outside_an_offset_layer_are_sent_transparent():
    document = FakeDocument(layer_offset=(120, 90), selection=Rect(100, 80, 30, 30))
    client = FakeClient()
    fill(document, client, padding=0, grow=0, feather=0)
    sent = array_from_plane(client.requests[0].image)
    assert (client.requests[0].x, client.requests[0].y) == (99, 79)  # 30 → 32 px, 1 px more on each side
    assert not sent[:11, :, 3].any() and not sent[:, :21, 3].any()  # above and left of the layer
    assert np.array_equal(sent[11:, 21:], document.layer[:21, :11])  # layer pixel (0, 0) sits at image (120, 90)


@pytest.mark.parametrize("sample_merged", [True, False])
def test_sample_merged_sends_the_visible_picture_else_the_layer(sample_merged):
    """The issue's case: a layer smaller than the fill over a photo. Sample merged (the default) sends what the
    user sees; off, the layer alone, whose missing pixels are transparent with a neutral colour."""
    document = FakeDocument(layer_offset=(120, 90), selection=Rect(100, 80, 30, 30), background=True)
    client = FakeClient()
    fill(document, client, padding=0, grow=0, feather=0, sample_merged=sample_merged)
    (request,) = client.requests
    crop = Rect(request.x, request.y, request.image.width, request.image.height)
    sent = array_from_plane(request.image)
    visible = np.frombuffer(document.read_visible(crop), np.uint8).reshape(sent.shape)
    layer_only = np.frombuffer(document.read_rgba(crop), np.uint8).reshape(sent.shape)
    if sample_merged:
        assert np.array_equal(sent, visible) and (sent[..., 3] == 255).all()
    else:
        outside = layer_only[..., 3] == 0
        assert outside.sum() == 32 * 32 - 11 * 21  # the layer covers 11 columns and 21 rows of the crop
        assert (sent[outside] == (*TRANSPARENT_RGB, 0)).all()
        assert np.array_equal(sent[~outside], layer_only[~outside])
    assert np.array_equal(array_from_plane(request.mask), document.selection[crop.y:crop.bottom, crop.x:crop.right])


def test_sample_merged_is_on_by_default():
    assert EditorOptions().sample_merged


@pytest.mark.parametrize("stored", [(0, 0, 0), (200, 30, 40)], ids=["stores-black", "cleared-over-red"])
def test_the_hidden_colour_of_transparent_pixels_never_reaches_the_daemon(stored):
    """A fully transparent stripe through the selection and its context, storing black (as GIMP's new layers do)
    or the red it had before Edit ▸ Clear: the daemon gets a neutral colour there, every other pixel exactly."""
    document = FakeDocument(selection=Rect(150, 100, 40, 30))
    document.layer[:, 160:168] = (*stored, 0)
    document.layer[40:44, :, 3] = 0  # a transparent line keeping the photo's colours
    client = FakeClient()
    fill(document, client)
    (request,) = client.requests
    crop = Rect(request.x, request.y, request.image.width, request.image.height)
    sent = array_from_plane(request.image)
    original = document.layer[crop.y:crop.bottom, crop.x:crop.right]
    hidden = original[..., 3] == 0
    assert hidden.sum() == 8 * crop.height + 4 * (crop.width - 8)
    assert (sent[hidden] == (*TRANSPARENT_RGB, 0)).all()
    assert np.array_equal(sent[~hidden], original[~hidden])


def test_progress_is_relayed_per_stage_as_fractions_and_text():
    document = FakeDocument(selection=Rect(10, 10, 20, 20))
    gb = 10**9
    download, load, inference = Stage.DOWNLOAD, Stage.LOAD, Stage.INFERENCE
    fill(document, FakeClient(steps=[(0, 2_600_000_000, download), (1_200_000_000, 2_600_000_000, download),
                                     (2_600_000_000, 2_600_000_000, download), (0, 0, load),
                                     (0, 6, inference), (3, 6, inference), (4, 6, inference),
                                     (6, 6, inference)]), num_variants=2)
    start = next(n for n, (_, text) in enumerate(document.progress_log) if text.startswith("Downloading"))
    assert document.progress_log[start:] == [
        (0.0, "Downloading the model… 0 % (0.0 of 2.6 GB)"),
        (pytest.approx(1.2 * gb / (2.6 * gb)), "Downloading the model… 46 % (1.2 of 2.6 GB)"),
        (1.0, "Downloading the model… 100 % (2.6 of 2.6 GB)"),
        (0.0, "Loading the model…"),
        (0.0, "Generating… variant 1 of 2, step 0 of 3"),
        (0.5, "Generating… variant 1 of 2, step 3 of 3"),
        (pytest.approx(4 / 6), "Generating… variant 2 of 2, step 1 of 3"),
        (1.0, "Generating… variant 2 of 2, step 3 of 3"),
        (1.0, "Adding the result layers…"),
    ]


@pytest.mark.parametrize(("step", "total", "stage", "variants", "text"), [
    (0, 4, Stage.INFERENCE, 1, "Generating… step 0 of 4"),
    (5, 7, Stage.INFERENCE, 2, "Generating… step 5 of 7"),  # not a whole number of steps per variant
    (300_000, 800_000, Stage.DOWNLOAD, 1, "Downloading the model… 37 % (0.3 of 0.8 MB)"),
])
def test_progress_text_edge_cases(step, total, stage, variants, text):
    assert progress_text(step, total, stage, variants)[1] == text


def test_request_options_travel_to_the_daemon():
    document = FakeDocument(selection=Rect(10, 10, 20, 20))
    client = FakeClient()
    fill(document, client, scheduler="euler_a", loras=parse_loras("detail:0.5, style"), refiner_strength=0.3,
         controlnet_conditioning_scale=1.5)
    (request,) = client.requests
    options = request.options
    assert (options.scheduler, options.loras, options.refiner_strength, options.controlnet_conditioning_scale) \
        == (Scheduler.EULER_A, {"detail": 0.5, "style": 1.0}, 0.3, 1.5)
    default = FakeClient()
    fill(FakeDocument(selection=Rect(10, 10, 20, 20)), default)
    (plain,) = default.requests
    options = plain.options
    assert (options.scheduler, options.loras, options.refiner_strength, options.controlnet_conditioning_scale) \
        == (Scheduler.DEFAULT, {}, 0.0, 1.0)


@pytest.mark.parametrize(("text", "pairs"), [
    ("", ()),
    (" , ", ()),
    ("detail", (("detail", 1.0),)),
    ("detail:0.8, style=-1.5,", (("detail", 0.8), ("style", -1.5))),
    (" my lora : 2 ", (("my lora", 2.0),)),
    ("sdxl:offset:0.5", (("sdxl:offset", 0.5),)),
])
def test_parse_loras_reads_name_weight_pairs(text, pairs):
    assert tuple(parse_loras(text).items()) == pairs


@pytest.mark.parametrize(("text", "words"), [
    ("detail:much", "Cannot read the LoRA “detail:much”"),
    (":0.5", "Cannot read the LoRA “:0.5”"),
    ("detail:nan", "name:weight"),
    ("detail:inf", "name:weight"),
    ("a:1, b, a:2", "“a” is named twice"),
])
def test_parse_loras_errors_say_how_to_write_them(text, words):
    with pytest.raises(ProtocolError) as caught:
        parse_loras(text)
    assert caught.value.code is ErrorCode.INVALID_REQUEST and words in caught.value.message


@pytest.mark.parametrize(("params", "words"), [
    ({"loras": {f"l{k}": 1.0 for k in range(9)}}, "9 LoRAs requested; at most 8"),
    ({"loras": {"detail": 5.0}}, "the weight of LoRA 'detail'=5.0 is outside [-4, 4]"),
    ({"scheduler": "karras"}, "scheduler 'karras' is not one of default, ddim"),
    ({"refiner_strength": 1.0}, "refiner_strength=1.0 is outside [0, 0.99]"),
    ({"controlnet_conditioning_scale": 2.5}, "controlnet_conditioning_scale=2.5 is outside [0, 2]"),
    ({"strength": 0.0}, "strength=0.0 is outside [0.01, 1]"),
    ({"seed": SEED_MAX + 1}, f"seed={SEED_MAX + 1} is outside [-1, {SEED_MAX}]"),
])
def test_out_of_range_options_are_refused_by_the_record(params, words):
    """The record refuses them as it is made (from the dialog, the CLI or the wire), so no fill can start."""
    with pytest.raises(ProtocolError) as caught:
        FillOptions(**params)
    assert caught.value.code is ErrorCode.INVALID_REQUEST and words in caught.value.message


GINT_MAX = 2**31 - 1
"""Largest value of a GIMP int argument (a ``gint``), so of the dialog's Seed field."""


def test_every_seed_the_daemon_may_pick_fits_the_seed_field_and_no_other_is_sent():
    assert SEED_MAX == GINT_MAX
    client = FakeClient()
    fill(FakeDocument(selection=Rect(10, 10, 20, 20)), client, seed=SEED_MAX)
    assert client.requests[0].options.seed == SEED_MAX
    with pytest.raises(ProtocolError) as caught:
        FillOptions(seed=SEED_MAX + 1)
    assert caught.value.code is ErrorCode.INVALID_REQUEST and f"[-1, {SEED_MAX}]" in caught.value.message


def test_every_scheduler_has_a_readable_label():
    labels = [scheduler.label for scheduler in Scheduler]
    assert len(set(labels)) == len(Scheduler) and all(labels)
    assert Scheduler.EULER_A.label == "Euler Ancestral" and Scheduler.DEFAULT.label == "Model default"


def test_an_incompatible_option_points_to_the_status_command():
    document = FakeDocument(selection=Rect(10, 10, 20, 20))
    error = DaemonError(ErrorCode.INCOMPATIBLE, "LoRA 'xl-style' is made for sdxl, engine 'sd15-inpaint' is sd")
    with pytest.raises(FillError) as caught:
        fill(document, FakeClient(error=error), loras={"xl-style": 1.0})
    assert caught.value.code is ErrorCode.INCOMPATIBLE
    assert "made for sdxl" in caught.value.message and "`gimp-inpaint status`" in caught.value.message
    assert document.add_calls == 0


def test_no_selection_fails_before_connecting():
    document = FakeDocument(selection=None)
    connected = []
    with pytest.raises(FillError) as caught:
        run_fill(document, lambda: connected.append(1), FillOptions(), EditorOptions())
    assert caught.value.message == NO_SELECTION and not connected and document.add_calls == 0


@pytest.mark.parametrize(("error", "code", "words"), [
    (DaemonError(ErrorCode.OUT_OF_MEMORY, "CUDA out of memory"), ErrorCode.OUT_OF_MEMORY, "Select a smaller area"),
    (DaemonError(ErrorCode.CANCELLED, "job 'x' was cancelled"), ErrorCode.CANCELLED, "cancelled"),
    (DaemonError(ErrorCode.JOB_FAILED, "engine 'sd' failed: boom"), ErrorCode.JOB_FAILED, "failed: boom"),
    (DaemonError(ErrorCode.TOO_LARGE, "… too large for the connection (code 1009: …)."), ErrorCode.TOO_LARGE,
     "(code 1009: …). Select a smaller area or lower the padding."),
    (DaemonUnavailable("Cannot reach … Start it with `gimp-inpaint-daemon`"), None, "gimp-inpaint-daemon"),
])
def test_daemon_failures_paste_nothing(error, code, words):
    document = FakeDocument(selection=Rect(10, 10, 20, 20))
    with pytest.raises(FillError) as caught:
        fill(document, FakeClient(error=error))
    assert caught.value.code is code
    assert words in caught.value.message
    assert document.add_calls == 0


def test_connection_setup_errors_become_fill_errors():
    document = FakeDocument(selection=Rect(10, 10, 20, 20))

    def factory():
        raise ConnectionConfigError("connection.json is missing. Install the plug-in with `gimp-inpaint-install`")

    with pytest.raises(FillError, match="gimp-inpaint-install"):
        run_fill(document, factory, FillOptions(), EditorOptions())
    assert document.add_calls == 0


def test_a_variant_the_client_refuses_pastes_nothing():
    """The client checks each variant's place (tests/test_client.py); its BAD_MESSAGE pastes nothing."""
    document = FakeDocument(selection=Rect(10, 10, 20, 20))
    error = DaemonError(ErrorCode.BAD_MESSAGE, "the daemon sent variant 0 (64×64 at (8, 0)) where variant 0 …")
    with pytest.raises(FillError) as caught:
        fill(document, FakeClient(error=error))
    assert caught.value.code is ErrorCode.BAD_MESSAGE and document.add_calls == 0


def test_a_crop_over_the_daemons_limit_is_not_sent():
    document = FakeDocument(selection=Rect(100, 100, 50, 50))
    client = FakeClient(max_pixels=100 * 100)
    with pytest.raises(FillError) as caught:
        fill(document, client)
    assert caught.value.code is ErrorCode.TOO_LARGE and "lower the padding" in caught.value.message
    assert client.requests == [] and document.add_calls == 0


def test_named_engine_and_a_note_when_it_ignores_the_prompt():
    document = FakeDocument(selection=Rect(10, 10, 20, 20))
    client = FakeClient()
    names = fill(document, client, engine="opencv", prompt="a cat")
    assert client.requests[0].options.engine == "opencv"
    assert document.messages == ["The “opencv” engine ignores the prompt."]
    assert names == ["Generative fill: a cat (fill, seed 40)"]


def test_unknown_engine_lists_the_engines_with_their_families():
    document = FakeDocument(selection=Rect(10, 10, 20, 20))
    with pytest.raises(FillError) as caught:
        fill(document, FakeClient(), engine="sdxl")
    assert caught.value.code is ErrorCode.UNKNOWN_ENGINE
    assert "Engines: sd15-inpaint (sd-inpaint), opencv (`gimp-inpaint status`" in caught.value.message


def test_layer_names_use_the_prompt_or_the_engine_and_the_mode_and_stay_short():
    assert layer_name(FillOptions(fill_mode=FillMode.REMOVE), "opencv", 3) == "Generative fill: opencv (remove, seed 3)"
    long = layer_name(FillOptions(prompt="a very long prompt " * 10, fill_mode=FillMode.FILL), "sd", 1)
    assert long.startswith("Generative fill: a very long prompt") and long.endswith("… (fill, seed 1)")
    assert len(long) == len("Generative fill: ") + 48 + len(" (fill, seed 1)")


def test_result_layer_checks_its_byte_counts():
    with pytest.raises(ValueError, match="do not fit"):
        ResultLayer("x", 0, 0, 2, 2, bytes(15), bytes(4), seed=1)


@pytest.mark.parametrize(("setup", "params", "mode"), [
    pytest.param({"selection": Rect(150, 100, 40, 30)}, {}, FillMode.REMOVE, id="no-prompt-removes"),
    pytest.param({"selection": Rect(150, 100, 40, 30)}, {"prompt": "a red balloon"}, FillMode.FILL,
                 id="a-prompt-fills"),
    pytest.param({"selection": Rect(150, 100, 40, 30)}, {"prompt": "  "}, FillMode.REMOVE, id="a-blank-prompt-removes"),
    pytest.param({"selection": Rect(0, 100, 20, 20)}, {"prompt": "sky"}, FillMode.EXPAND, id="left-edge-expands"),
    pytest.param({"selection": Rect(380, 280, 20, 20)}, {}, FillMode.EXPAND, id="bottom-right-corner-expands"),
    pytest.param({"selection": Rect(100, 80, 30, 30), "layer_offset": (120, 90)}, {"prompt": "sky"},
                 FillMode.EXPAND, id="transparent-canvas-expands"),
    pytest.param({"selection": Rect(100, 80, 30, 30), "layer_offset": (120, 90), "background": True}, {},
                 FillMode.REMOVE, id="a-layer-below-shows-so-it-removes"),
    pytest.param({"selection": Rect(0, 100, 20, 20)}, {"fill_mode": FillMode.FILL}, FillMode.FILL,
                 id="a-chosen-mode-is-sent-as-it-is"),
    pytest.param({"selection": Rect(150, 100, 40, 30)}, {"fill_mode": FillMode.EXPAND}, FillMode.EXPAND,
                 id="expand-away-from-the-edge-as-chosen"),
])
def test_auto_is_resolved_on_the_editor_side_and_named_in_the_layer(setup, params, mode):
    """The request carries the concrete mode protocol.resolve_fill_mode picks from what only the editor knows: the
    selection reaching a side of the canvas, or selected pixels with alpha 0 in the crop sent."""
    document, client = FakeDocument(**setup), FakeClient()
    names = fill(document, client, engine="opencv", **params)
    (request,) = client.requests
    assert request.options.fill_mode is mode
    assert names == [f"Generative fill: {params.get('prompt', '').strip() or 'opencv'} ({mode.value}, seed 40)"]


def test_covers_transparent_needs_a_selected_pixel_with_alpha_0():
    opaque, clear = bytes([9, 9, 9, 255]), bytes([9, 9, 9, 0])
    assert covers_transparent(opaque + clear, bytes([255, 1]))
    assert not covers_transparent(opaque + clear, bytes([255, 0]))  # the transparent pixel is not selected
    assert not covers_transparent(opaque * 2, bytes([255, 255]))
    with pytest.raises(ValueError, match="do not match"):
        covers_transparent(opaque, bytes(2))


def expand(document: FakeDocument, client: FakeClient, expansion: ExpandOptions, **params: object) -> list[str]:
    return run_expand(document, lambda: client, *records(**params), expansion)


def test_expand_sends_the_new_area_as_the_mask_beside_a_band_of_the_old_picture():
    """Growing a 350×250 picture 64 px to the right: the crop is the new strip plus padding px of the picture (a
    multiple of 8 wide, the whole height), the mask 255 exactly over the new area, the new area transparent (sent
    grey), the picture's pixels at their place; the layer is in the grown canvas's coordinates and the canvas grows
    with it, in the same call."""
    document = FakeDocument(width=350, height=250)  # the layer covers the whole picture
    client = FakeClient()
    names = expand(document, client, ExpandOptions(pixels=64, sides=GrowSides.RIGHT), engine="opencv",
                   padding=32, grow=0, feather=0, seed=7)
    (request,) = client.requests
    assert request.options.fill_mode is FillMode.EXPAND
    assert (request.x, request.y, request.image.width, request.image.height) == (318, 0, 96, 250)
    sent, mask = array_from_plane(request.image), array_from_plane(request.mask)
    assert np.array_equal(sent[:, :32], document.layer[:, 318:350])
    assert not sent[:, 32:, 3].any() and (sent[:, 32:, :3] == TRANSPARENT_RGB).all()
    assert not mask[:, :32].any() and (mask[:, 32:] == 255).all()
    assert document.canvas == CanvasExpansion(414, 250, Rect(0, 0, 350, 250))
    assert names == ["Generative fill: opencv (expand, seed 7)"] and document.add_calls == 1
    (layer,) = document.layers
    assert (layer.x, layer.y, layer.width, layer.height) == (318, 0, 96, 250)


def test_expand_on_every_side_moves_the_old_picture_and_ignores_the_selection():
    document = FakeDocument(width=350, height=250, layer_offset=(20, 10))  # the layer is partly off the canvas
    client = FakeClient()
    expand(document, client, ExpandOptions(pixels=16), padding=8, engine="opencv")  # no selection: none needed
    (request,) = client.requests
    assert (request.x, request.y, request.image.width, request.image.height) == (0, 0, 382, 282)
    sent, mask = array_from_plane(request.image), array_from_plane(request.mask)
    old = np.frombuffer(document.read_rgba(Rect(0, 0, 350, 250)), np.uint8).reshape(250, 350, 4)
    cleared = old.copy()
    cleared[old[..., 3] == 0, :3] = TRANSPARENT_RGB
    assert np.array_equal(sent[16:266, 16:366], cleared)  # the picture as the document reads it, moved by 16, 16
    frame = np.ones((282, 382), bool)
    frame[16:266, 16:366] = False
    assert (mask[frame] == 255).all() and not mask[~frame].any()
    assert document.canvas == CanvasExpansion(382, 282, Rect(16, 16, 350, 250))


@pytest.mark.parametrize(("expansion", "words"), [
    (ExpandOptions(pixels=0), "Cannot expand the canvas: the 400×300 canvas would keep its size"),
    (ExpandOptions(size="300x300"), "smaller than the 400×300 canvas"),
    (ExpandOptions(aspect="4:3"), "already has the aspect ratio 1.33333"),
    (ExpandOptions(size="500x300", sides=GrowSides.TOP), "neither the left nor the right side may grow"),
])
def test_an_expansion_the_canvas_cannot_take_fails_before_connecting(expansion, words):
    document, client = FakeDocument(), FakeClient()
    with pytest.raises(FillError) as caught:
        expand(document, client, expansion)
    assert caught.value.code is ErrorCode.INVALID_REQUEST and words in caught.value.message
    assert not client.requests and document.add_calls == 0


def test_a_failed_expansion_leaves_the_canvas_as_it_was():
    document = FakeDocument()
    with pytest.raises(FillError):
        expand(document, FakeClient(error=DaemonError(ErrorCode.JOB_FAILED, "boom")), ExpandOptions(pixels=8))
    assert document.add_calls == 0 and document.canvas is None
