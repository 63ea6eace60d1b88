"""Generative fill, editor-independent: selection → context crop → daemon → result layers.

:func:`run_fill` is the whole job of the GIMP procedure (and of ``gimp-inpaint fill``) written
against :class:`client.document.Document`, so it is tested without GIMP; :func:`run_expand`, Generative Expand's
(and ``gimp-inpaint expand``'s), is :func:`run_fill` on the document as its canvas will be (:mod:`client.expand`).
Its settings are the two records of :mod:`protocol.options`: :class:`protocol.FillOptions` (sent) and
:class:`protocol.EditorOptions` (used here). It adds layers only after the job's :class:`protocol.Result` arrived:
on any failure nothing is pasted. Each result layer carries its request (:class:`client.metadata.RequestMetadata`),
and :func:`run_fill` can fill a recorded selection again (*More Like This*, *Edit and Regenerate…*). Vendored into the
plug-in: imports only the standard library, :mod:`protocol`, :mod:`client.connection`, :mod:`client.document`,
:mod:`client.expand` and :mod:`client.metadata`.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable

from gimp_inpaint.protocol import (
    DEFAULT_PREVIEW_SIZE,
    EditorOptions,
    ErrorCode,
    FillMode,
    FillOptions,
    InpaintRequest,
    Plane,
    ProtocolError,
    Rect,
    Stage,
    context_crop,
    feather_reach,
    resolve_fill_mode,
)

from .connection import ClientError, DaemonError, InpaintClient, pick_engine
from .document import Document, ResultLayer
from .expand import ExpandedDocument, ExpandOptions
from .metadata import RecordedSelection, RequestMetadata

NO_SELECTION = "Select the area to fill first (Select ▸ Ellipse, Free Select, …), then run Generative Fill again."
"""Raised as :class:`FillError` without a selection: filling the whole layer is never what was meant."""

TRANSPARENT_RGB = (128, 128, 128)
"""The colour (R'G'B' u8, neutral grey) every fully transparent pixel is sent with (:func:`clear_transparent`); at 16
bits ``257 ×`` it (32896, both bytes 128)."""

_ALPHA_ZERO = bytes([0xFF] + [0] * 255)
"""``bytes.translate`` table: alpha 0 → 0xFF, every other alpha → 0."""

_NON_ZERO = bytes([0] + [0xFF] * 255)
"""``bytes.translate`` table: 0 → 0, every other value → 0xFF (a selected pixel of a ``Y u8`` mask)."""

_PROMPT_IN_NAME = 48
"""Longest prompt (characters) quoted in a layer name; longer ones are cut with "…"."""

_HINTS = {
    ErrorCode.OUT_OF_MEMORY: "Select a smaller area, lower the padding, or ask for fewer variants.",
    ErrorCode.TOO_LARGE: "Select a smaller area or lower the padding.",
    ErrorCode.INCOMPATIBLE: "`gimp-inpaint status` lists each engine's family, LoRAs and whether it has a refiner.",
    ErrorCode.PAUSED: "Choose Resume in the menu of the daemon's icon in the system tray, then try again.",
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


def _transparent(rgba: bytes, size: int) -> bytes:
    """One byte per pixel of ``rgba`` (R'G'B'A of ``size`` bytes a sample, little-endian): 0xFF where its alpha is 0
    (every byte of it), 0 elsewhere."""
    stride = 4 * size
    hidden = rgba[3 * size::stride].translate(_ALPHA_ZERO)
    for byte in range(1, size):
        other = rgba[3 * size + byte::stride].translate(_ALPHA_ZERO)
        hidden = (int.from_bytes(hidden, "big") & int.from_bytes(other, "big")).to_bytes(len(hidden), "big")
    return hidden


def clear_transparent(rgba: bytes, bits: int = 8) -> bytes:
    """``rgba`` (R'G'B'A u8, or u16 little-endian with ``bits`` 16) with the RGB of every fully transparent pixel
    (alpha 0) set to :data:`TRANSPARENT_RGB`.

    A transparent pixel shows nothing, but it stores a colour: black in a new layer or outside every layer, the
    erased picture after Edit ▸ Clear. No engine may take that for context; the daemon repaints transparent pixels
    as part of the hole (:func:`daemon.compositing.repaint_mask`). Every other byte is kept. Standard library only
    (the plug-in has no NumPy), at C speed: byte slicing and one big-integer select.

    Raises:
        ValueError: the length is not a multiple of a pixel's (4 samples).
    """
    size = bits // 8
    stride = 4 * size
    if len(rgba) % stride:
        raise ValueError(f"{len(rgba)} bytes are not whole RGBA pixels of {bits}-bit samples")
    if 0 not in rgba[3 * size::stride]:  # no alpha's first byte is 0: no alpha is
        return rgba
    hidden = _transparent(rgba, size)  # 0xFF for each transparent pixel, 0 for the others
    select, neutral = bytearray(len(rgba)), bytearray(len(rgba))
    for channel, value in enumerate(TRANSPARENT_RGB):
        for byte in range(size):  # at 16 bits both bytes of 257 × value are value
            select[channel * size + byte::stride] = hidden
            neutral[channel * size + byte::stride] = hidden.replace(b"\xff", bytes([value]))
    keep = ~int.from_bytes(select, "big")
    pixels = int.from_bytes(rgba, "big") & keep | int.from_bytes(neutral, "big")
    return pixels.to_bytes(len(rgba), "big")


def touches_edge(selection: Rect, image_width: int, image_height: int) -> bool:
    """True when ``selection`` (image pixels) reaches a side of the ``image_width × image_height`` canvas: one of
    the two signs of :func:`protocol.resolve_fill_mode` that ``auto`` means ``expand``."""
    return selection.x <= 0 or selection.y <= 0 or selection.right >= image_width or selection.bottom >= image_height


def covers_transparent(rgba: bytes, mask: bytes, bits: int = 8) -> bool:
    """True when some selected pixel (``mask`` > 0) has alpha 0 in ``rgba``: the other sign of
    :func:`protocol.resolve_fill_mode` that ``auto`` means ``expand`` (the selection reaches over empty canvas).

    Args:
        rgba: ``N × 4`` samples, R'G'B'A u8 (or u16 little-endian, ``bits`` 16; the crop as read, before
            :func:`clear_transparent`).
        mask: ``N`` bytes, Y u8 (the selection over the same crop).
        bits: the depth of ``rgba``'s samples, 8 or 16.

    Raises:
        ValueError: the lengths do not match.
    """
    size = bits // 8
    if len(rgba) != 4 * size * len(mask):
        raise ValueError(f"{len(rgba)} RGBA bytes of {bits}-bit samples do not match a mask of {len(mask)} pixels")
    if 0 not in rgba[3 * size::4 * size]:
        return False
    transparent, selected = _transparent(rgba, size), mask.translate(_NON_ZERO)  # 0xFF each where it holds
    return bool(int.from_bytes(transparent, "big") & int.from_bytes(selected, "big"))


def require_selection(document: Document) -> Rect:
    """The document's selection bounds (image pixels).

    Raises:
        FillError: nothing is selected (:data:`NO_SELECTION`).
    """
    selection = document.selection_bounds()
    if selection is None:
        raise FillError(NO_SELECTION)
    return selection


def fill_crop(selection: Rect, image_width: int, image_height: int, options: FillOptions,
              editor: EditorOptions) -> Rect:
    """The context crop sent for ``selection``: :func:`protocol.context_crop` with
    ``padding + grow + feather_reach(feather)`` (the margin the feathered edge needs, then the context).

    Raises:
        ValueError: the selection does not intersect the image, or a negative size.
    """
    margin = editor.padding + options.grow + feather_reach(options.feather)
    return context_crop(selection, image_width, image_height, margin)


def layer_name(options: FillOptions, engine: str, seed: int) -> str:
    """``"Generative fill: <prompt or engine> (<fill mode>, seed N)"``, the prompt cut to 48 characters; the fill
    mode is the one the request ran with (:attr:`protocol.FillOptions.fill_mode`, ``auto`` resolved), e.g.
    ``"Generative fill: opencv (remove, seed 3)"``."""
    label = options.prompt.strip() or engine
    if len(label) > _PROMPT_IN_NAME:
        label = label[:_PROMPT_IN_NAME - 1].rstrip() + "…"
    return f"Generative fill: {label} ({options.fill_mode.value}, seed {seed})"


def _bytes_done(done: int, total: int) -> str:
    """``"1.2 of 2.6 GB"``: decimal GB, or MB when ``total`` is under 1 GB, one decimal."""
    unit, name = (1e9, "GB") if total >= 10**9 else (1e6, "MB")
    return f"{done / unit:.1f} of {total / unit:.1f} {name}"


def progress_text(step: int, total: int, stage: Stage, num_variants: int) -> tuple[float, str]:
    """The progress bar's ``(fraction, text)`` for one :class:`protocol.Progress` of a job of ``num_variants``.

    - ``download`` (bytes): ``"Downloading the model… 45 % (1.2 of 2.6 GB)"``;
    - ``load``: ``"Loading the model…"`` (fraction 0);
    - ``inference`` (steps × variants, :class:`protocol.Progress`): ``"Generating… step 3 of 25"``, with several
      variants ``"Generating… variant 1 of 2, step 3 of 25"`` (steps counted within the variant).
    """
    fraction = step / total if total else 0.0
    if stage is Stage.DOWNLOAD:
        return fraction, f"Downloading the model… {math.floor(100 * fraction)} % ({_bytes_done(step, total)})"
    if stage is Stage.LOAD:
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


def run_fill(document: Document, client_factory: Callable[[], InpaintClient], options: FillOptions,
             editor: EditorOptions, *, selection: RecordedSelection | None = None, origin: str = "") -> list[str]:
    """Fill the document's selection (or a recorded one) with the daemon's result; return the names of the new
    layers.

    Steps:

    1. the selection's bounds (:func:`require_selection`, or ``selection``'s) → the context crop (:func:`fill_crop`);
    2. that crop of the visible picture (``editor.sample_merged``) or of the source layer (at the document's
       :attr:`~client.document.Document.bits`: a 16-bit plane for an image deeper than 8 bits), with
       :func:`clear_transparent`, and of the selection → :class:`protocol.InpaintRequest` carrying ``options`` with
       its fill mode resolved here, where the canvas is known (:func:`protocol.resolve_fill_mode`: ``auto`` is
       ``expand`` when the selection :func:`touches_edge` or :func:`covers_transparent` pixels of the crop, else
       ``remove`` without a prompt and ``fill`` with one; another mode is sent as it is);
    3. ``client_factory()`` connects; the engine is picked from the welcome (``options.engine``, or the first
       available one);
    4. the job runs with progress relayed to ``document.progress`` (:func:`progress_text`: download, load, steps)
       and, when the document shows previews (:attr:`client.document.Document.preview_every` ≥ 1), the request asks
       for them at its rate and size (:attr:`~client.document.Document.preview_size`) and each goes to
       ``document.show_preview``; ``document.cancel_requested`` is polled throughout, and a cancel ends the fill
       with nothing pasted;
    5. one :class:`ResultLayer` per variant at its box inside the crop and its depth, named with its mode and seed
       (:func:`layer_name`) and carrying its request (:class:`client.metadata.RequestMetadata`: ``options`` and
       ``editor`` as given, the engine and fill mode it ran with, its seed, the selection, the crop, the job id,
       ``origin``, the client's name and the daemon's and protocol's versions),
       in the daemon's variant order (variant 1 first, i.e. on top), all added in one call (one undo step) after
       the job's result arrived.

    Args:
        document: the editor.
        client_factory: returns a connected client (e.g. ``lambda: InpaintClient.connect(url, token, name)``);
            it may raise :class:`client.connection.ClientError`.
        options: what is sent (:class:`protocol.FillOptions`).
        editor: what the editor does around it (:class:`protocol.EditorOptions`).
        selection: a selection recorded with an earlier result (:attr:`client.metadata.RequestMetadata.selection`)
            to fill instead of the document's; its canvas must be the document's size.
        origin: the job id of the lineage the new layers join (:attr:`client.metadata.RequestMetadata.origin` of the
            result they regenerate); empty: they start their own, this job's.

    Raises:
        FillError: no selection, a recorded selection of another canvas size, invalid settings, crop over the
            daemon's pixel limit, daemon not reachable, daemon error (``code`` set), or a result that does not fit
            the request.
    """
    width, height = document.size()
    if selection is not None and (selection.canvas_width, selection.canvas_height) != (width, height):
        raise FillError(f"The image is {width}×{height} pixels, but the result was made on a canvas of "
                        f"{selection.canvas_width}×{selection.canvas_height}: select the area to fill again.",
                        ErrorCode.INVALID_REQUEST)
    bounds = require_selection(document) if selection is None else selection.bounds
    asked = options
    crop = fill_crop(bounds, width, height, options, editor)
    document.progress(0.0, "Reading the selection…")
    try:
        bits = document.bits
        rgba = document.read_visible(crop) if editor.sample_merged else document.read_rgba(crop)
        mask = document.read_mask(crop) if selection is None else selection.read(crop)
        mode = resolve_fill_mode(options.fill_mode, options.prompt,
                                 touches_edge=touches_edge(bounds, width, height),
                                 covers_transparent=covers_transparent(rgba, mask, bits))
        options = dataclasses.replace(options, fill_mode=mode)
        preview_every = document.preview_every
        request = InpaintRequest(
            job_id=uuid.uuid4().hex, x=crop.x, y=crop.y, image=Plane(crop.width, crop.height, 4,
                                                                       clear_transparent(rgba, bits), bits=bits),
            mask=Plane(crop.width, crop.height, 1, mask), options=options, preview_every=preview_every,
            preview_size=document.preview_size if preview_every else DEFAULT_PREVIEW_SIZE,
        )
    except ProtocolError as exc:
        raise FillError(f"Invalid generative fill settings: {exc.message}", exc.code) from None

    def relay(step: int, total: int, stage: Stage) -> None:
        document.progress(*progress_text(step, total, stage, options.num_variants))

    document.progress(0.0, "Connecting to the inpainting daemon…")
    try:
        with client_factory() as client:
            welcome = client.welcome
            if crop.width * crop.height > welcome.max_pixels:
                raise FillError(f"The area to send ({crop.width}×{crop.height} pixels with padding) exceeds the "
                                f"daemon's limit of {welcome.max_pixels} pixels. Select a smaller area or lower the "
                                f"padding.", ErrorCode.TOO_LARGE)
            try:
                engine_name = pick_engine(welcome, options.engine)
            except DaemonError as exc:  # decided here from the welcome, not reported by the daemon
                raise FillError(exc.message, exc.code) from None
            request = dataclasses.replace(request, options=dataclasses.replace(options, engine=engine_name))
            engine = next(e for e in welcome.engines if e.name == engine_name)
            if options.prompt.strip() and not engine.uses_prompt:
                document.message(f"The “{engine.name}” engine ignores the prompt.")
            document.progress(0.0, f"Generative fill: waiting for “{engine.name}”…")
            variants = client.inpaint(request, on_progress=relay, should_cancel=document.cancel_requested,
                                      on_preview=document.show_preview if preview_every else None)
    except DaemonError as exc:
        raise _daemon_failure(exc) from None
    except ClientError as exc:
        raise FillError(exc.message) from None

    if not variants:
        raise FillError("The daemon returned no result; nothing was pasted.", ErrorCode.BAD_MESSAGE)
    recorded = selection or RecordedSelection.from_crop(width, height, bounds, crop, mask)
    made = RequestMetadata(options=asked, editor=editor, engine=engine_name, fill_mode=mode, seed=variants[0].seed,
                           crop=crop, selection=recorded, job=request.job_id, origin=origin or request.job_id,
                           client=client.client_name, daemon_version=welcome.daemon_version,
                           protocol_version=welcome.protocol_version)
    layers = [ResultLayer(name=layer_name(options, engine_name, variant.seed), x=variant.x, y=variant.y,
                          width=variant.image.width, height=variant.image.height,
                          rgba=bytes(variant.image.data), mask=bytes(variant.mask.data),  # decoded copies: no-ops
                          seed=variant.seed, timings=dict(variant.timings), bits=variant.image.bits,
                          metadata=dataclasses.replace(made, seed=variant.seed))
              for variant in variants]
    document.progress(1.0, "Adding the result layers…")
    return document.add_result_layers(layers)


def run_expand(document: Document, client_factory: Callable[[], InpaintClient], options: FillOptions,
               editor: EditorOptions, expand: ExpandOptions) -> list[str]:
    """Generative Expand: grow the document's canvas as ``expand`` says and fill the new area; return the names of
    the new layers.

    :func:`run_fill` on a :class:`client.expand.ExpandedDocument` (the new area is the selection, the old picture
    its context), with ``options.fill_mode`` set to ``expand``; the document's own selection plays no part. The
    canvas grows only once the result arrived, in the undo step of the result layers
    (:meth:`client.document.Document.add_result_layers` with the expansion); on any failure the image is left as
    it was.

    Raises:
        FillError: the expansion cannot be made for this canvas (code ``INVALID_REQUEST``), or any failure of
            :func:`run_fill`.
    """
    width, height = document.size()
    try:
        canvas = expand.expansion(width, height)
    except ValueError as exc:
        raise FillError(f"Cannot expand the canvas: {exc}.", ErrorCode.INVALID_REQUEST) from None
    return run_fill(ExpandedDocument(document, canvas), client_factory,
                    dataclasses.replace(options, fill_mode=FillMode.EXPAND), editor)
