"""Generative fill, editor-independent: selection → context crop → daemon → result layers.

:func:`run_fill` is the whole job of the GIMP procedure (and of ``gimp-inpaint fill``) written
against :class:`client.document.Document`, so it is tested without GIMP. It adds layers only
after the complete :class:`protocol.Result` arrived: on any failure nothing is pasted. Vendored into
the plug-in: imports only the standard library, :mod:`protocol` and :mod:`client.connection`.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from gimp_inpaint.protocol import (
    SCHEDULERS,
    ErrorCode,
    InpaintRequest,
    Plane,
    ProtocolError,
    Rect,
    context_crop,
    feather_reach,
)

from .connection import ClientError, DaemonError, InpaintClient, pick_engine
from .document import Document, ResultLayer

NO_SELECTION = "Select the area to fill first (Select ▸ Ellipse, Free Select, …), then run Generative Fill again."
"""Raised as :class:`FillError` without a selection: filling the whole layer is never what was meant."""

TRANSPARENT_RGB = (128, 128, 128)
"""The colour (R'G'B' u8, neutral grey) every fully transparent pixel is sent with (:func:`clear_transparent`)."""

_ALPHA_ZERO = bytes([0xFF] + [0] * 255)
"""``bytes.translate`` table: alpha 0 → 0xFF, every other alpha → 0."""

_PROMPT_IN_NAME = 48
"""Longest prompt (characters) quoted in a layer name; longer ones are cut with "…"."""

_HINTS = {
    ErrorCode.OUT_OF_MEMORY: "Select a smaller area, lower the padding, or ask for fewer variants.",
    ErrorCode.TOO_LARGE: "Select a smaller area or lower the padding.",
    ErrorCode.INCOMPATIBLE: "`gimp-inpaint status` lists each engine's family, LoRAs and whether it has a refiner.",
}
"""What the user can do about a daemon error, appended to its message."""


class FillError(Exception):
    """The fill failed; :attr:`message` is meant for the user, :attr:`code` is the daemon's error code if any."""

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


_SENTENCE_ENDS = (".", "!", "?", "…")
"""Punctuation that ends a sentence (:func:`add_hint`)."""

_CLOSING_QUOTES = "”’\"'"
"""Quotes that may follow a sentence's punctuation, as in ``He said “stop.”`` (brackets may not: the ``…`` of
``(code 1009: …)`` ends no sentence)."""


def add_hint(message: str, hint: str) -> str:
    """``message``, then ``hint`` as a sentence of its own: a full stop ends ``message`` unless it already ends
    with ``.``, ``!``, ``?`` or ``…`` (before any closing quotes); trailing spaces are dropped.

    For example ``add_hint("wrong token (see the log)", "Re-run the installer.")`` is
    ``"wrong token (see the log). Re-run the installer."``.
    """
    text = message.rstrip()
    if not text.rstrip(_CLOSING_QUOTES).endswith(_SENTENCE_ENDS):
        text += "."
    return f"{text} {hint}"


SCHEDULER_LABELS = dict(zip(SCHEDULERS, (
    "Model default", "DDIM", "Euler", "Euler Ancestral", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ 2M SDE Karras",
    "LMS Karras", "UniPC"), strict=True))
"""Readable name of each of :data:`protocol.SCHEDULERS`, in its order (the A1111 names that diffusers'
"Schedulers" guide maps to its classes), for the GIMP dialog's scheduler list and the CLI's help."""

LoraWeights = tuple[tuple[str, float], ...]
"""LoRAs to apply: ``(name, weight)`` pairs in the user's order (a tuple, so :class:`FillParams` stays hashable)."""


def parse_loras(text: str) -> LoraWeights:
    """Parse the LoRA field ``"name:weight, name2:weight"`` (``name=weight`` works too; a bare ``name`` means
    weight 1.0, the LoRA as trained). Empty items are skipped, so ``""`` is no LoRA.

    The weight is diffusers' ``set_adapters`` ``adapter_weights`` value; its range
    (±:data:`protocol.messages.LORA_WEIGHT_MAX`) and the number of LoRAs are checked by :class:`InpaintRequest`.

    Raises:
        FillError(INVALID_REQUEST): an item without a name, a weight that is not a finite number, or a LoRA
            named twice.
    """
    pairs: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        cut = max(item.rfind(":"), item.rfind("="))
        name, weight_text = (item[:cut].strip(), item[cut + 1:].strip()) if cut >= 0 else (item, "1")
        try:
            weight = float(weight_text)
        except ValueError:
            weight = math.nan
        if not name or not math.isfinite(weight):
            raise FillError(f"Cannot read the LoRA “{item}”: write name:weight, e.g. “detail:0.8, style:1.2” "
                            f"(a name alone means weight 1).", ErrorCode.INVALID_REQUEST)
        if name in pairs:
            raise FillError(f"The LoRA “{name}” is named twice; give each LoRA once.", ErrorCode.INVALID_REQUEST)
        pairs[name] = weight
    return tuple(pairs.items())


@dataclass(frozen=True)
class FillParams:
    """The procedure's arguments (GIMP names with ``_`` for ``-``); ranges are checked by :class:`InpaintRequest`.

    Attributes:
        prompt, negative_prompt: text conditioning (may be empty).
        engine: daemon engine name, ``""`` = the first available one.
        strength: 0 < strength ≤ 1 (diffusers ``strength``).
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance weight.
        seed: −1 for random, else 0…:data:`protocol.messages.SEED_MAX` (2³¹−1, what GIMP's Seed field holds).
        num_variants: results to generate, each from the next seed, one layer each.
        grow: pixels the daemon dilates the selection by.
        feather: blur radius (pixels) of the blend mask's edge.
        padding: pixels of context around the grown, feathered selection sent to the model.
        scheduler: one of :data:`protocol.SCHEDULERS` (``"default"`` keeps the model's own).
        loras: ``(name, weight)`` pairs (:func:`parse_loras` reads them from text), sent as
            :attr:`protocol.InpaintRequest.loras`.
        refiner_strength: 0 ≤ value < 1, share of the denoising done by a refining pass (0 = none).
        controlnet_conditioning_scale: 0…2, the ControlNet's weight (ControlNet engines only; 1 elsewhere).
        sample_merged: the context is the picture as the user sees it, the composite of the visible layers
            (:meth:`Document.read_visible`, GIMP's "Sample merged"); False: the source layer alone.
    """

    prompt: str = ""
    negative_prompt: str = ""
    engine: str = ""
    strength: float = 1.0
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    seed: int = -1
    num_variants: int = 1
    grow: int = 4
    feather: int = 12
    padding: int = 64
    scheduler: str = "default"
    loras: LoraWeights = ()
    refiner_strength: float = 0.0
    controlnet_conditioning_scale: float = 1.0
    sample_merged: bool = True


def clear_transparent(rgba: bytes) -> bytes:
    """``rgba`` (R'G'B'A u8) with the RGB of every fully transparent pixel (alpha 0) set to :data:`TRANSPARENT_RGB`.

    A transparent pixel shows nothing, but it stores a colour: black in a new layer or outside every layer, the
    erased picture after Edit ▸ Clear. No engine may take that for context; the daemon repaints transparent pixels
    as part of the hole (:func:`daemon.compositing.repaint_mask`). Every other byte is kept. Standard library only
    (the plug-in has no NumPy), at C speed: byte slicing and one big-integer select.

    Raises:
        ValueError: the length is not a multiple of 4.
    """
    if len(rgba) % 4:
        raise ValueError(f"{len(rgba)} bytes are not whole RGBA pixels")
    alpha = rgba[3::4]
    if 0 not in alpha:
        return rgba
    hidden = alpha.translate(_ALPHA_ZERO)  # 0xFF for each transparent pixel, 0 for the others
    select, neutral = bytearray(len(rgba)), bytearray(len(rgba))
    for channel, value in enumerate(TRANSPARENT_RGB):
        select[channel::4] = hidden
        neutral[channel::4] = hidden.replace(b"\xff", bytes([value]))
    keep = ~int.from_bytes(select, "big")
    pixels = int.from_bytes(rgba, "big") & keep | int.from_bytes(neutral, "big")
    return pixels.to_bytes(len(rgba), "big")


def require_selection(document: Document) -> Rect:
    """The document's selection bounds (image pixels).

    Raises:
        FillError: nothing is selected (:data:`NO_SELECTION`).
    """
    selection = document.selection_bounds()
    if selection is None:
        raise FillError(NO_SELECTION)
    return selection


def fill_crop(selection: Rect, image_width: int, image_height: int, params: FillParams) -> Rect:
    """The context crop sent for ``selection``: :func:`protocol.context_crop` with
    ``padding + grow + feather_reach(feather)`` (the margin the feathered edge needs, then the context).

    Raises:
        ValueError: the selection does not intersect the image, or a negative size.
    """
    margin = params.padding + params.grow + feather_reach(params.feather)
    return context_crop(selection, image_width, image_height, margin)


def layer_name(params: FillParams, engine: str, seed: int) -> str:
    """``"Generative fill: <prompt or engine> (seed N)"``, the prompt cut to 48 characters."""
    label = params.prompt.strip() or engine
    if len(label) > _PROMPT_IN_NAME:
        label = label[:_PROMPT_IN_NAME - 1].rstrip() + "…"
    return f"Generative fill: {label} (seed {seed})"


def _bytes_done(done: int, total: int) -> str:
    """``"1.2 of 2.6 GB"``: decimal GB, or MB when ``total`` is under 1 GB, one decimal."""
    unit, name = (1e9, "GB") if total >= 10**9 else (1e6, "MB")
    return f"{done / unit:.1f} of {total / unit:.1f} {name}"


def progress_text(step: int, total: int, stage: str, num_variants: int) -> tuple[float, str]:
    """The progress bar's ``(fraction, text)`` for one :class:`protocol.Progress` of a job of ``num_variants``.

    - ``download`` (bytes): ``"Downloading the model… 45 % (1.2 of 2.6 GB)"``;
    - ``load``: ``"Loading the model…"`` (fraction 0);
    - ``inference`` (steps × variants, :class:`protocol.Progress`): ``"Generating… step 3 of 25"``, with several
      variants ``"Generating… variant 1 of 2, step 3 of 25"`` (steps counted within the variant).
    """
    fraction = step / total if total else 0.0
    if stage == "download":
        return fraction, f"Downloading the model… {math.floor(100 * fraction)} % ({_bytes_done(step, total)})"
    if stage == "load":
        return 0.0, "Loading the model…"
    per_variant = total // num_variants if num_variants > 1 and total % num_variants == 0 else 0
    if not per_variant:
        return fraction, f"Generating… step {step} of {total}"
    variant = max(1, math.ceil(step / per_variant))
    return fraction, (f"Generating… variant {variant} of {num_variants}, "
                      f"step {step - (variant - 1) * per_variant} of {per_variant}")


def _daemon_failure(exc: DaemonError) -> FillError:
    if exc.code is ErrorCode.CANCELLED:
        return FillError("Generative fill was cancelled.", exc.code)
    message, hint = f"The inpainting daemon reported an error: {exc.message}", _HINTS.get(exc.code)
    return FillError(add_hint(message, hint) if hint else message, exc.code)


def run_fill(document: Document, client_factory: Callable[[], InpaintClient], params: FillParams) -> list[str]:
    """Fill the document's selection with the daemon's result; return the names of the new layers.

    Steps: selection bounds (:func:`require_selection`) → :func:`fill_crop` → read that crop of the visible
    picture (``params.sample_merged``) or of the source layer, with :func:`clear_transparent`, and of the
    selection → :class:`protocol.InpaintRequest` → ``client_factory()`` connects → pick the engine →
    inpaint with progress relayed to ``document.progress`` (:func:`progress_text`: download, load, steps) →
    one :class:`ResultLayer` per variant, named with its seed (:func:`layer_name`), in the daemon's variant order
    (variant 1 first, i.e. on top), added in one call (one undo step) after the whole result arrived.

    Args:
        document: the editor.
        client_factory: returns a connected client (e.g. ``lambda: InpaintClient.connect(url, token, name)``);
            it may raise :class:`client.connection.ClientError`.
        params: the fill settings.

    Raises:
        FillError: no selection, invalid settings, crop over the daemon's pixel limit, daemon not
            reachable, daemon error (``code`` set), or a result that does not fit the request.
    """
    selection = require_selection(document)
    width, height = document.size()
    crop = fill_crop(selection, width, height, params)
    document.progress(0.0, "Reading the selection…")
    try:
        request = InpaintRequest(
            job_id=uuid.uuid4().hex, engine=params.engine, x=crop.x, y=crop.y,
            image=Plane(crop.width, crop.height, 4, clear_transparent(
                document.read_visible(crop) if params.sample_merged else document.read_rgba(crop))),
            mask=Plane(crop.width, crop.height, 1, document.read_mask(crop)),
            prompt=params.prompt, negative_prompt=params.negative_prompt, strength=params.strength,
            guidance_scale=params.guidance_scale, num_inference_steps=params.num_inference_steps,
            seed=params.seed, num_variants=params.num_variants, grow=params.grow, feather=params.feather,
            scheduler=params.scheduler, loras=dict(params.loras), refiner_strength=params.refiner_strength,
            controlnet_conditioning_scale=params.controlnet_conditioning_scale,
        )
    except ProtocolError as exc:
        raise FillError(f"Invalid generative fill settings: {exc.message}", exc.code) from None

    def relay(step: int, total: int, stage: str) -> None:
        document.progress(*progress_text(step, total, stage, params.num_variants))

    document.progress(0.0, "Connecting to the inpainting daemon…")
    try:
        with client_factory() as client:
            welcome = client.welcome
            if crop.width * crop.height > welcome.max_pixels:
                raise FillError(f"The area to send ({crop.width}×{crop.height} pixels with padding) exceeds the "
                                f"daemon's limit of {welcome.max_pixels} pixels. Select a smaller area or lower the "
                                f"padding.", ErrorCode.TOO_LARGE)
            try:
                request = dataclasses.replace(request, engine=pick_engine(welcome, params.engine))
            except DaemonError as exc:  # decided here from the welcome, not reported by the daemon
                raise FillError(exc.message, exc.code) from None
            engine = next(e for e in welcome.engines if e.name == request.engine)
            if params.prompt.strip() and not engine.uses_prompt:
                document.message(f"The “{engine.name}” engine ignores the prompt.")
            document.progress(0.0, f"Generative fill: waiting for “{engine.name}”…")
            result = client.inpaint(request, on_progress=relay, should_cancel=document.cancel_requested)
    except DaemonError as exc:
        raise _daemon_failure(exc) from None
    except ClientError as exc:
        raise FillError(exc.message) from None

    layers = []
    for variant in result.variants:
        if (variant.x, variant.y, variant.image.width, variant.image.height) != (crop.x, crop.y, crop.width,
                                                                                  crop.height):
            raise FillError(f"The daemon returned a {variant.image.width}×{variant.image.height} result at "
                            f"({variant.x}, {variant.y}) for the {crop.width}×{crop.height} crop at "
                            f"({crop.x}, {crop.y}); nothing was pasted.", ErrorCode.BAD_MESSAGE)
        layers.append(ResultLayer(
            name=layer_name(params, request.engine, variant.seed), x=variant.x, y=variant.y,
            width=variant.image.width, height=variant.image.height, rgba=variant.image.data,
            mask=variant.mask.data, seed=variant.seed, timings=dict(variant.timings),
        ))
    if not layers:
        raise FillError("The daemon returned no result; nothing was pasted.", ErrorCode.BAD_MESSAGE)
    document.progress(1.0, "Adding the result layers…")
    return document.add_result_layers(layers)
