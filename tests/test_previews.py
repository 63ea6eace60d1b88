"""Live previews (issue 12, item 2): the Preview message and the request's preview fields, the daemon's previews
through the real server (a scripted stepping engine and the tiny diffusion pipeline), and the client's side."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import msgpack
import numpy as np
import pytest
from gimp_inpaint.client.connection import DaemonError, InpaintClient
from gimp_inpaint.client.fill import FillError, run_fill
from gimp_inpaint.daemon.engines import previews
from gimp_inpaint.daemon.engines.base import CancelCheck, EngineJob, ProgressCallback
from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
from gimp_inpaint.daemon.engines.previews import (
    LATENT_SPACES,
    LinearPreviewer,
    TinyAutoencoderPreviewer,
    load_previewer,
)
from gimp_inpaint.daemon.pool import ModelPool
from gimp_inpaint.daemon.registry import ModelSpec, Registry
from gimp_inpaint.protocol import (
    DEFAULT_PREVIEW_SIZE,
    MAX_PREVIEW_EVERY,
    MAX_PREVIEW_SIZE,
    MIN_PREVIEW_SIZE,
    PROTOCOL_VERSION,
    Accepted,
    Cancel,
    EditorOptions,
    Error,
    ErrorCode,
    FillOptions,
    Hello,
    InpaintRequest,
    Message,
    Plane,
    Preview,
    ProtocolError,
    Rect,
    Result,
    Welcome,
    decode,
    encode,
    preview_dimensions,
)
from hypothesis import given
from hypothesis import strategies as st
from running_daemon import WAIT, StepEngine, running_daemon
from skimage import data
from test_client import make_request, scripted_job
from test_fill import FakeDocument
from websockets.sync.client import ClientConnection, connect


def photo_preview(width: int = 96, height: int = 64, step: int = 4, total: int = 10) -> Preview:
    """A preview of a real picture: scikit-image's astronaut scaled with OpenCV to ``width × height``, opaque."""
    rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    rgba = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    return Preview("job-1", step, total, Plane(width, height, 4, rgba.tobytes()))


def rewired(message: object, **changes: Any) -> bytes:
    """``message``'s frame with ``changes`` to its top-level map (a nested map given as a dict replaces one key)."""
    wire = msgpack.unpackb(encode(message), raw=False)  # type: ignore[arg-type]
    for key, value in changes.items():
        wire[key] = {**wire[key], **value} if isinstance(value, dict) else value
    return msgpack.packb(wire, use_bin_type=True)


def tiny_request(**fields: Any) -> InpaintRequest:
    """A 40×30 request (a photo crop, a rectangle masked) with ``fields``."""
    rgba = np.dstack([data.astronaut()[:30, :40], np.full((30, 40), 255, np.uint8)])
    mask = np.zeros((30, 40), np.uint8)
    mask[5:25, 10:30] = 255
    return InpaintRequest("j", 0, 0, Plane(40, 30, 4, rgba.tobytes()), Plane(40, 30, 1, mask.tobytes()), **fields)


# ---------------------------------------------------------------------------------------------------- protocol


def test_a_preview_round_trips_with_its_pixels_exact() -> None:
    preview = photo_preview()
    decoded = decode(encode(preview))
    assert decoded == preview and isinstance(decoded, Preview)
    assert np.array_equal(np.frombuffer(decoded.image.data, np.uint8), np.frombuffer(preview.image.data, np.uint8))


def test_a_preview_at_the_size_cap_decodes() -> None:
    assert decode(encode(photo_preview(MAX_PREVIEW_SIZE, 300))) == photo_preview(MAX_PREVIEW_SIZE, 300)


@pytest.mark.parametrize(("changes", "words"), [
    ({"step": 0}, "step 0/10"),
    ({"step": 11}, "step 11/10"),
    ({"image": {"width": MAX_PREVIEW_SIZE + 1, "height": 1, "channels": 4, "data": bytes(4 * (MAX_PREVIEW_SIZE + 1))}},
     f"exceeds {MAX_PREVIEW_SIZE} pixels"),
    ({"image": {"width": 2, "height": MAX_PREVIEW_SIZE + 1, "channels": 4, "data": bytes(8 * (MAX_PREVIEW_SIZE + 1))}},
     f"exceeds {MAX_PREVIEW_SIZE} pixels"),
    ({"image": {"width": 96, "height": 64, "channels": 3, "data": bytes(96 * 64 * 3)}}, "must be RGBA"),
    ({"image": {"width": 96, "height": 64, "channels": 1, "data": bytes(96 * 64)}}, "must be RGBA"),
])
def test_an_inconsistent_preview_is_a_bad_message(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as caught:
        decode(rewired(photo_preview(), **changes))
    assert caught.value.code is ErrorCode.BAD_MESSAGE


def test_a_preview_over_the_pixel_limit_is_too_large() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(encode(photo_preview(96, 64)), max_pixels=96 * 64 - 1)
    assert caught.value.code is ErrorCode.TOO_LARGE


def test_a_request_asks_for_no_previews_by_default_and_carries_its_preview_fields() -> None:
    request = tiny_request()
    assert (request.preview_every, request.preview_size) == (0, DEFAULT_PREVIEW_SIZE)
    asking = tiny_request(preview_every=3, preview_size=MIN_PREVIEW_SIZE)
    assert decode(encode(asking)) == asking
    assert asking.preview_dimensions() == (16, 12)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("preview_every", -1, "preview_every -1 is outside"),
    ("preview_every", MAX_PREVIEW_EVERY + 1, f"preview_every {MAX_PREVIEW_EVERY + 1} is outside"),
    ("preview_size", MIN_PREVIEW_SIZE - 1, f"preview_size {MIN_PREVIEW_SIZE - 1} is outside"),
    ("preview_size", MAX_PREVIEW_SIZE + 1, f"preview_size {MAX_PREVIEW_SIZE + 1} is outside"),
])
def test_preview_fields_out_of_range_are_invalid_requests(field: str, value: int, words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as caught:
        decode(rewired(tiny_request(), **{field: value}))
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(ProtocolError, match=words):
        tiny_request(**{field: value})


def test_preview_fields_must_be_integers() -> None:
    with pytest.raises(ProtocolError, match="preview_every must be of type int") as caught:
        decode(rewired(tiny_request(), preview_every="2"))
    assert caught.value.code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize(("width", "height", "size", "expected"), [
    (1024, 768, 256, (256, 192)),
    (768, 1024, 256, (192, 256)),
    (100, 40, 256, (100, 40)),  # never enlarged
    (4000, 8, 16, (16, 1)),  # at least a pixel
    (512, 512, 512, (512, 512)),
])
def test_preview_dimensions(width: int, height: int, size: int, expected: tuple[int, int]) -> None:
    assert preview_dimensions(width, height, size) == expected


@given(st.integers(1, 16384), st.integers(1, 16384), st.integers(MIN_PREVIEW_SIZE, MAX_PREVIEW_SIZE))
def test_previews_keep_the_crops_shape_within_the_size_asked(width: int, height: int, size: int) -> None:
    preview_width, preview_height = preview_dimensions(width, height, size)
    assert max(preview_width, preview_height) == min(size, max(width, height))
    assert min(preview_width, preview_height) >= 1
    scale = min(size, max(width, height)) / max(width, height)
    for side, exact in ((preview_width, width * scale), (preview_height, height * scale)):
        assert abs(side - exact) <= 0.5 or (side == 1 and exact < 1)  # rounded, a pixel at least


# ------------------------------------------------------------------------------------------ through the daemon


class PreviewEngine(StepEngine):
    """A :class:`running_daemon.StepEngine` that shows previews as a diffusion engine does: at each step its
    :class:`daemon.engines.base.Previews` says is due, the inverted picture at an eighth of the crop's size (the
    resolution of a model's latents).

    Attributes:
        jobs: every job it ran; steps_run: the steps it made, over all jobs; finished: set when a job's last step is
            done (before the variant is delivered).
    """

    def __init__(self, steps: int = 7, delay: float = 0.0) -> None:
        super().__init__("previews", steps=steps, delay=delay)
        self.jobs: list[EngineJob] = []
        self.steps_run = 0
        self.finished = threading.Event()

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.jobs.append(job)
        height, width = job.mask.shape
        picture = cv2.resize(255 - job.image, (max(1, width // 8), max(1, height // 8)), interpolation=cv2.INTER_AREA)

        def report(step: int, total: int) -> None:
            progress(step, total)
            self.steps_run += 1
            if job.previews is not None and job.previews.due(step):
                job.previews.show(step, picture)

        generated = self.paint(job, report, cancelled)
        self.finished.set()
        return generated


def photo_request(width: int = 200, height: int = 160, **fields: Any) -> InpaintRequest:
    """The astronaut scaled to ``width × height`` (OpenCV, area) as a crop at (30, 40) with its middle half masked,
    on the ``previews`` engine without colour match; ``fields`` are the request's own (``options`` replaced whole)."""
    rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    mask = np.zeros(rgb.shape[:2], np.uint8)
    mask[height // 4:3 * height // 4, width // 4:3 * width // 4] = 255
    options = fields.pop("options", FillOptions(engine="previews", color_match=False, num_variants=2))
    return InpaintRequest(uuid.uuid4().hex, 30, 40, Plane(width, height, 4, rgba.tobytes()),
                          Plane(width, height, 1, mask.tobytes()), options, **fields)


@contextmanager
def raw_connection(url: str, token: str, sock: socket.socket | None = None) -> Iterator[ClientConnection]:
    """A WebSocket to the daemon after its Hello → Welcome, without :class:`client.connection.InpaintClient` (so a
    test sees every message in order, or reads none for a while)."""
    with connect(url, compression=None, max_size=None, sock=sock) as websocket:
        websocket.send(encode(Hello(PROTOCOL_VERSION, "test_previews", token)))
        assert isinstance(decode(websocket.recv(WAIT)), Welcome)
        yield websocket


def messages_until_end(websocket: ClientConnection, job_id: str) -> list[Message]:
    """The job's messages as they come, up to its Result or Error (included)."""
    messages: list[Message] = []
    while not messages or not isinstance(messages[-1], Result | Error):
        message = decode(websocket.recv(WAIT))
        assert getattr(message, "job_id", None) == job_id, message
        messages.append(message)
    return messages


def test_previews_come_at_the_asked_steps_before_their_variant(tmp_path: Path) -> None:
    engine = PreviewEngine(steps=7, delay=0.03)
    request = photo_request(preview_every=2, preview_size=64)
    with running_daemon(tmp_path, [engine]) as (url, token), raw_connection(url, token) as websocket:
        websocket.send(encode(request))
        messages = messages_until_end(websocket, request.job_id)
    kinds = [(type(m).__name__, getattr(m, "step", getattr(m, "index", None))) for m in messages]
    previews = [m for m in messages if isinstance(m, Preview)]
    # steps 2, 4, 6 of the first variant's 7 and 8, 10, 12 of the second's (its last, 7 and 14, are the variants)
    assert [p.step for p in previews] == [2, 4, 6, 8, 10, 12] and {p.total for p in previews} == {14}
    assert kinds.index(("Preview", 6)) < kinds.index(("Variant", 0)) < kinds.index(("Preview", 8))
    assert kinds.index(("Preview", 12)) < kinds.index(("Variant", 1)) and kinds[-1] == ("Result", None)
    assert all(kinds.index(("Progress", p.step)) < kinds.index(("Preview", p.step)) for p in previews)
    assert request.preview_dimensions() == (64, 51)
    assert {(p.image.width, p.image.height) for p in previews} == {(64, 51)}
    # the crop, scaled, where the blend mask is 0 (a corner); the engine's picture in the middle of the hole
    crop = cv2.resize(np.frombuffer(request.image.data, np.uint8).reshape(160, 200, 4), (64, 51),
                      interpolation=cv2.INTER_AREA)
    shown = np.frombuffer(previews[0].image.data, np.uint8).reshape(51, 64, 4)
    assert np.array_equal(shown[:6, :6], crop[:6, :6])
    middle = (slice(20, 31), slice(26, 38))
    assert np.abs(shown[middle][..., :3].astype(int) - (255 - crop[middle][..., :3].astype(int))).mean() < 25
    assert (shown[..., 3] == 255).all()


def test_a_request_without_preview_every_gets_none(tmp_path: Path) -> None:
    engine = PreviewEngine(steps=4)
    request = photo_request()
    with running_daemon(tmp_path, [engine]) as (url, token), raw_connection(url, token) as websocket:
        websocket.send(encode(request))
        messages = messages_until_end(websocket, request.job_id)
    assert isinstance(messages[-1], Result) and not any(isinstance(m, Preview) for m in messages)
    assert [job.previews for job in engine.jobs] == [None, None]


def test_an_engine_without_previews_sends_none(tmp_path: Path) -> None:
    request = photo_request(preview_every=1, options=FillOptions(engine="steps", color_match=False))
    with running_daemon(tmp_path, [StepEngine(steps=4)]) as (url, token), raw_connection(url, token) as websocket:
        websocket.send(encode(request))
        messages = messages_until_end(websocket, request.job_id)
    assert isinstance(messages[-1], Result) and not any(isinstance(m, Preview) for m in messages)


@pytest.mark.parametrize(("width", "height", "size", "expected"), [
    (600, 300, MAX_PREVIEW_SIZE, (512, 256)),
    (40, 30, DEFAULT_PREVIEW_SIZE, (40, 30)),  # a crop smaller than the size asked: its own
    (120, 600, MIN_PREVIEW_SIZE, (3, 16)),
])
def test_previews_are_bounded_by_the_size_asked(tmp_path: Path, width: int, height: int, size: int,
                                                 expected: tuple[int, int]) -> None:
    engine = PreviewEngine(steps=3, delay=0.02)
    request = photo_request(width, height, preview_every=1, preview_size=size,
                            options=FillOptions(engine="previews", color_match=False))
    with running_daemon(tmp_path, [engine]) as (url, token), raw_connection(url, token) as websocket:
        websocket.send(encode(request))
        previews = [m for m in messages_until_end(websocket, request.job_id) if isinstance(m, Preview)]
    assert [p.step for p in previews] == [1, 2]
    assert {(p.image.width, p.image.height) for p in previews} == {expected}


def test_a_cancelled_job_stops_sending_previews_and_the_next_job_runs(tmp_path: Path) -> None:
    engine = PreviewEngine(steps=200, delay=0.02)
    request = photo_request(preview_every=1, preview_size=32)
    with running_daemon(tmp_path, [engine]) as (url, token), raw_connection(url, token) as websocket:
        websocket.send(encode(request))
        before: list[Message] = []
        while sum(isinstance(m, Preview) for m in before) < 3:
            before.append(decode(websocket.recv(WAIT)))
        websocket.send(encode(Cancel(request.job_id)))
        after = messages_until_end(websocket, request.job_id)
        steps_at_cancel = engine.steps_run
        assert isinstance(after[-1], Error) and after[-1].code is ErrorCode.CANCELLED
        # only previews already on their way when the cancel was sent: one on the socket, one being made at most
        assert sum(isinstance(m, Preview) for m in after) <= 2
        assert engine.steps_run < 20
        following = photo_request(preview_every=1, preview_size=32,
                                  options=FillOptions(engine="previews", color_match=False))
        engine.steps = 3
        websocket.send(encode(following))
        messages = messages_until_end(websocket, following.job_id)
    assert isinstance(messages[-1], Result)
    assert [m.step for m in messages if isinstance(m, Preview)] == [1, 2]
    assert engine.steps_run == steps_at_cancel + 3


def test_a_slow_client_gets_previews_dropped_not_queued(tmp_path: Path) -> None:
    engine = PreviewEngine(steps=150)
    request = photo_request(512, 400, preview_every=1, preview_size=MAX_PREVIEW_SIZE,
                            options=FillOptions(engine="previews", color_match=False))
    with running_daemon(tmp_path, [engine]) as (url, token):
        host, port = url.removeprefix("ws://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads slowly: a small window
        sock.connect((host, int(port)))
        with raw_connection(url, token, sock) as websocket:
            websocket.send(encode(request))
            # the client reads nothing while the job steps: the engine runs on all the same (previews never block)
            assert engine.finished.wait(WAIT)
            messages = messages_until_end(websocket, request.job_id)
    previews = [m for m in messages if isinstance(m, Preview)]
    assert isinstance(messages[-1], Result)
    # 149 were due (512×400×4 bytes each, 122 MB in all): the sockets' buffers held a few MB, the rest was dropped
    assert 1 <= len(previews) <= 25
    assert [p.step for p in previews] == sorted({p.step for p in previews})


# ------------------------------------------------------------------------------------ decoding the latents


@pytest.fixture(scope="session")
def tiny_autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ``AutoencoderTiny`` (TAESD's architecture, 8 channels a block, one block a stage: it
    downsamples by 8 like TAESD) saved with ``save_pretrained``, as the hub's ``madebyollin/taesd`` is laid out."""
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-taesd") / "taesd"
    diffusers.AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                              num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)).save_pretrained(folder)
    return folder


def test_the_linear_map_is_comfyuis_for_sd_and_sdxl_latents() -> None:
    torch = pytest.importorskip("torch")
    latents = torch.zeros(1, 4, 2, 3)
    latents[0, 0, 0, 0] = 1.0  # one latent pixel with only its first channel
    sd = LinearPreviewer(LATENT_SPACES["sd"])(latents)
    assert sd.shape == (2, 3, 3) and sd.dtype == np.uint8
    # (factor + 1) / 2 × 255 of SD 1.5's first row, 0.3512, 0.2297, 0.3227; grey (0 + 1) / 2 elsewhere
    assert sd[0, 0].tolist() == [172, 157, 169] and (sd[1:] == 128).all()
    sdxl = LinearPreviewer(LATENT_SPACES["sdxl"])(torch.zeros(1, 4, 1, 1, dtype=torch.float16))
    assert sdxl[0, 0].tolist() == [141, 125, 127]  # SDXL's bias 0.1084, −0.0175, −0.0011


@pytest.mark.parametrize(("architecture", "first_row", "bias"), [
    ("sd3", (-0.0922, -0.0175, 0.0749), (0.2394, 0.2135, 0.1925)),  # ComfyUI's SD3
    ("flux-fill", (-0.0346, 0.0244, 0.0681), (-0.0329, -0.0718, -0.0851)),  # ComfyUI's Flux
    ("z-image", (-0.0346, 0.0244, 0.0681), (-0.0329, -0.0718, -0.0851)),  # FLUX.1's autoencoder too
    ("qwen-image", (-0.1299, -0.1692, 0.2932), (-0.1835, -0.0868, -0.3360)),  # ComfyUI's Wan21
])
def test_the_linear_map_of_16_channel_latents_is_comfyuis(architecture: str, first_row: tuple[float, ...],
                                                         bias: tuple[float, ...],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(previews, "cached_folder", lambda model, index_file: None)  # no tiny autoencoder cached
    latents = torch.zeros(1, 16, 1, 2)
    latents[0, 0, 0, 0] = 1.0  # the first latent pixel with only its first channel, the second all zero
    previewer = load_previewer("auto", architecture, no_load_progress)
    assert isinstance(previewer, LinearPreviewer)
    rgb = previewer(latents)
    assert rgb[0, 0].tolist() == [round((f + b + 1) * 127.5) for f, b in zip(first_row, bias, strict=True)]
    assert rgb[0, 1].tolist() == [round((b + 1) * 127.5) for b in bias]


def test_flux2_klein_and_kandinsky_latents_get_no_preview_without_a_named_autoencoder() -> None:
    assert load_previewer("auto", "flux2-klein", no_load_progress) is None
    assert load_previewer("linear", "kandinsky22", no_load_progress) is None


def test_the_previewer_follows_the_models_previews_setting(tiny_autoencoder: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(previews, "cached_folder", lambda model, index_file: None)  # nothing in the cache
    assert load_previewer("off", "sd", no_load_progress) is None
    assert isinstance(load_previewer("linear", "sdxl", no_load_progress), LinearPreviewer)
    assert isinstance(load_previewer("auto", "sd", no_load_progress), LinearPreviewer)
    assert load_previewer("auto", "kandinsky22", no_load_progress) is None
    assert load_previewer("taesd", "kandinsky22", no_load_progress) is None
    assert "no tiny autoencoder for kandinsky22 latents" in caplog.text
    assert isinstance(load_previewer("taesd", "qwen-image", no_load_progress), LinearPreviewer)  # none known for it
    assert "no tiny autoencoder for qwen-image latents; the linear map" in caplog.text
    missing = load_previewer(str(tiny_autoencoder.parent / "missing"), "sd", no_load_progress)
    assert isinstance(missing, LinearPreviewer) and "cannot load the tiny autoencoder" in caplog.text
    named = load_previewer(str(tiny_autoencoder), "sd", no_load_progress)
    assert isinstance(named, TinyAutoencoderPreviewer)
    decoded = named(torch.randn(1, 4, 6, 5))
    assert decoded.shape == (48, 40, 3) and decoded.dtype == np.uint8 and decoded.std() > 0
    cached: list[tuple[str, str]] = []
    monkeypatch.setattr(previews, "cached_folder", lambda model, index_file: cached.append((model, index_file))
                        or tiny_autoencoder)
    assert isinstance(load_previewer("auto", "sdxl", no_load_progress), TinyAutoencoderPreviewer)
    assert cached == [("madebyollin/taesdxl", "config.json")]


def no_load_progress(stage: str, step: int, total: int) -> None:
    """A load progress callback that ignores the report."""


def tiny_engine(model: Path, **spec: Any) -> DiffusersEngine:
    """A CPU :class:`DiffusersEngine` named ``tiny`` on ``model`` with ``spec``'s keys."""
    return DiffusersEngine(ModelSpec("tiny", str(model), **spec), Registry(), ModelPool(100 * 10**9), device="cpu")


def diffusion_request(width: int = 160, height: int = 120, **fields: Any) -> InpaintRequest:
    """The astronaut at ``width × height`` with its middle masked for the ``tiny`` engine: 4 steps, one variant."""
    return photo_request(width, height, options=FillOptions(engine="tiny", prompt="a red helmet", seed=3,
                                                            num_inference_steps=4, color_match=False), **fields)


def test_the_tiny_pipeline_sends_previews_through_the_daemon(tmp_path: Path, tiny_inpaint_model: Path) -> None:
    engine = tiny_engine(tiny_inpaint_model)
    request = diffusion_request(preview_every=1, preview_size=80)
    shown: list[Preview] = []
    progress: list[int] = []
    with running_daemon(tmp_path, [engine]) as (url, token), InpaintClient.connect(url, token, "test") as client:
        (variant,) = client.inpaint(request, on_progress=lambda step, total, stage: progress.append(total),
                                    on_preview=shown.append)
        plain = client.inpaint(dataclasses.replace(request, job_id="plain", preview_every=0), on_preview=shown.append)
    total = progress[-1]  # PNDM runs one step more than asked
    assert [p.step for p in shown] == list(range(1, total)) and {p.total for p in shown} == {total}
    assert {(p.image.width, p.image.height) for p in shown} == {(80, 60)}
    crop = cv2.resize(np.frombuffer(request.image.data, np.uint8).reshape(120, 160, 4), (80, 60),
                      interpolation=cv2.INTER_AREA)
    for preview in shown:  # the crop where the blend mask is 0, the linear map of the latents in the hole
        pixels = np.frombuffer(preview.image.data, np.uint8).reshape(60, 80, 4)
        assert np.array_equal(pixels[:4, :4], crop[:4, :4])
        assert np.abs(pixels[20:40, 25:55].astype(int) - crop[20:40, 25:55]).mean() > 10
    assert plain[0].image == variant.image  # previews change nothing in the result


def test_a_tiny_autoencoder_makes_the_previews_of_a_model_that_names_it(tiny_inpaint_model: Path,
                                                                        tiny_autoencoder: Path) -> None:
    from gimp_inpaint.daemon.worker import PreviewOutlet, run_job

    engine = tiny_engine(tiny_inpaint_model, previews=str(tiny_autoencoder))
    shown: list[Preview] = []
    outcome = run_job(diffusion_request(preview_every=2), engine, lambda step, total, stage: None, lambda: False,
                      lambda variant: None, previews=PreviewOutlet(lambda: True, shown.append))
    assert isinstance(outcome, Result) and [p.step for p in shown] == [2, 4]
    assert isinstance(engine._previewer, TinyAutoencoderPreviewer)
    off = tiny_engine(tiny_inpaint_model, previews="off")
    run_job(diffusion_request(preview_every=1), off, lambda step, total, stage: None, lambda: False,
            lambda variant: None, previews=PreviewOutlet(lambda: True, shown.append))
    assert len(shown) == 2  # a model with previews = "off" shows none


# ---------------------------------------------------------------------------------------------------- client


class PreviewDocument(FakeDocument):
    """:class:`test_fill.FakeDocument` showing previews at ``every`` steps and ``size`` pixels; it asks to cancel
    once it has shown ``cancel_after`` of them (None: never)."""

    def __init__(self, every: int = 1, size: int = 64, cancel_after: int | None = None) -> None:
        super().__init__(selection=Rect(150, 100, 60, 40))
        self._every, self._size, self.cancel_after = every, size, cancel_after
        self.previews: list[Preview] = []

    @property
    def preview_every(self) -> int:
        return self._every

    @property
    def preview_size(self) -> int:
        return self._size

    def show_preview(self, preview: Preview) -> None:
        self.previews.append(preview)

    def cancel_requested(self) -> bool:
        return self.cancel_after is not None and len(self.previews) >= self.cancel_after


def fill_on(url: str, token: str, document: FakeDocument) -> list[str]:
    """``run_fill`` of ``document`` on the daemon's ``previews`` engine, one variant, no colour match."""
    return run_fill(document, lambda: InpaintClient.connect(url, token, "test_previews"),
                    FillOptions(engine="previews", color_match=False), EditorOptions())


def test_run_fill_shows_the_previews_and_pastes_only_the_result(tmp_path: Path) -> None:
    engine = PreviewEngine(steps=6, delay=0.03)
    document = PreviewDocument(every=2, size=64)
    with running_daemon(tmp_path, [engine]) as (url, token):
        names = fill_on(url, token, document)
    assert [p.step for p in document.previews] == [2, 4] and document.add_calls == 1 and len(names) == 1
    (job,) = engine.jobs
    height, width = job.mask.shape
    assert {(p.image.width, p.image.height) for p in document.previews} == {preview_dimensions(width, height, 64)}


def test_a_document_without_previews_asks_for_none(tmp_path: Path) -> None:
    engine = PreviewEngine(steps=3)
    with running_daemon(tmp_path, [engine]) as (url, token):
        fill_on(url, token, FakeDocument(selection=Rect(150, 100, 60, 40)))
    assert [job.previews for job in engine.jobs] == [None]


def test_a_cancel_during_previews_pastes_nothing_and_frees_the_daemon(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gimp_inpaint.daemon.server")
    engine = PreviewEngine(steps=300, delay=0.02)
    document = PreviewDocument(every=1, cancel_after=2)
    with running_daemon(tmp_path, [engine]) as (url, token):
        with pytest.raises(FillError) as caught:
            fill_on(url, token, document)
        assert caught.value.code is ErrorCode.CANCELLED
        assert document.add_calls == 0 and document.layers == []
        assert 2 <= len(document.previews) <= 3 and engine.steps_run < 50  # stopped within a few steps
        engine.steps = 3
        after = PreviewDocument(every=1)
        fill_on(url, token, after)  # the daemon is free for the next job at once
    assert after.add_calls == 1 and [p.step for p in after.previews] == [1, 2]
    assert "→ signalled" in caplog.text and "cancelled in" in caplog.text  # the daemon's log: the cancel, the end


def test_a_preview_not_asked_for_or_of_another_size_is_a_bad_message() -> None:
    def script_with(preview: Preview) -> Callable[[InpaintRequest], list[object]]:
        return lambda request: [Accepted(request.job_id, 0), dataclasses.replace(preview, job_id=request.job_id)]

    right = photo_preview(64, 48, step=1, total=4)  # the 64×48 crop of make_request, asked at its own size
    for request, preview, words in [
        (make_request("opencv"), right, "not asked for"),
        (dataclasses.replace(make_request("opencv"), preview_every=1, preview_size=32), right,
         "64×48 preview where 32×24 was asked for"),
    ]:
        with scripted_job(script_with(preview)) as (url, _), InpaintClient.connect(url, "token", "pytest") as client, \
                pytest.raises(DaemonError, match=words) as caught:
            client.inpaint(request, on_preview=lambda preview: None)
        assert caught.value.code is ErrorCode.BAD_MESSAGE


def test_previews_reach_on_preview_in_order_and_none_after_a_cancel() -> None:
    def script(request: InpaintRequest) -> list[object]:
        previews = [dataclasses.replace(photo_preview(64, 48, step, 4), job_id=request.job_id) for step in (1, 2, 3)]
        return [Accepted(request.job_id, 0), previews[0], previews[1], "await cancel", previews[2],
                Error(ErrorCode.CANCELLED, "cancelled", request.job_id)]

    shown: list[Preview] = []
    request = dataclasses.replace(make_request("opencv"), preview_every=1)
    with scripted_job(script) as (url, received), InpaintClient.connect(url, "token", "pytest") as client, \
            pytest.raises(DaemonError) as caught:
        client.inpaint(request, on_preview=shown.append, should_cancel=lambda: len(shown) >= 2, poll_interval=0.01)
    assert caught.value.code is ErrorCode.CANCELLED and received == [Cancel(request.job_id)]
    assert [p.step for p in shown] == [1, 2]
