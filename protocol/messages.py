"""Typed messages of the gimp-inpaint protocol (version :data:`PROTOCOL_VERSION`).

Every message is a frozen dataclass; its ``__post_init__`` checks value ranges so that an
inconsistent message cannot exist, whether built locally or decoded from the wire (the codec in
:mod:`protocol.codec` checks types first). Images travel as :class:`Plane`: raw interleaved samples (``u8``, or
little-endian ``u16`` for a crop deeper than 8 bits) with explicit width, height, channel count and sample depth,
never PNG or base64.

Conversation::

    client → Hello            daemon → Welcome   (or Error UNAUTHORIZED / VERSION_MISMATCH, then close)
    client → InpaintRequest   daemon → Accepted, Progress…, Preview…, Variant…, Result   (or Error with the job id)
    client → Cancel           daemon → Error CANCELLED for that job (if it had not finished)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .enums import Family, Stage, WireEnum
from .errors import ErrorCode, ProtocolError
from .options import FILL_OPTIONS, MAX_VARIANTS, SEED_MAX, FillOptions
from .quoting import quote

PROTOCOL_VERSION = 6
"""Bumped on every incompatible change of the messages below (2: schedulers, LoRAs, refiner, ControlNet scale,
model families and progress stages; 3: the ``busy`` error code, which an older client's decoder refuses; 4: a
request's options as one :class:`protocol.FillOptions` record, each variant sent as its own :class:`Variant` message
as soon as it is done and cut to its blend mask's bounding box, then a :class:`Result` that ends the job; 5: the
``fill_mode`` and ``color_match`` options, which an older daemon's decoder refuses, and each engine's per-family
defaults, :attr:`EngineInfo.defaults`; a request's ``preview_every`` and ``preview_size`` and the :class:`Preview`
messages they ask for, which an older peer's decoder refuses; the ``paused`` error code of a daemon paused from its
tray menu, which an older client's decoder refuses; a plane's sample depth, :attr:`Plane.bits` (a 16-bit crop
and its variants), and each engine's :attr:`EngineInfo.bits` and :attr:`EngineInfo.state`, which an older peer's
decoder refuses; 6: the transformer model families (:class:`protocol.Family`: ``sd3-inpaint``, ``flux-fill``, …) and
each engine's :attr:`EngineInfo.licence`, :attr:`EngineInfo.non_commercial` and :attr:`EngineInfo.quantization`,
and the :attr:`Welcome.token_owner`, which an older client's decoder refuses)."""

MAX_SIDE = 16384
"""Largest width or height (pixels) of any plane, whatever the daemon's pixel limit."""

SAMPLE_BITS = (8, 16)
"""The sample depths a :class:`Plane` may have (:attr:`Plane.bits`): 8-bit samples, one byte each, and 16-bit ones,
two bytes each, little-endian."""

MAX_JOB_ID_CHARS = 128
"""Longest :attr:`InpaintRequest.job_id` (characters)."""

MAX_CLIENT_NAME_CHARS = 200
"""Longest :attr:`Hello.client` (characters): the name is logged, and the hello is read before authentication."""

MAX_PREVIEW_EVERY = 500
"""Largest :attr:`InpaintRequest.preview_every` (denoising steps): the most steps one pass may run
(:attr:`protocol.FillOptions.num_inference_steps`)."""

DEFAULT_PREVIEW_EVERY = 2
"""The rate a client that shows previews asks for unless it knows better (steps between previews): 12 previews of a
25-step fill; the rate whose cost ``bench/previews.py`` measures."""

MIN_PREVIEW_SIZE = 16
"""Smallest :attr:`InpaintRequest.preview_size` (pixels)."""

MAX_PREVIEW_SIZE = 512
"""Largest :attr:`InpaintRequest.preview_size`, and the longest side of any :class:`Preview` image (pixels): a preview
frame is at most 512² × 4 bytes, 1 MiB."""

DEFAULT_PREVIEW_SIZE = 256
"""The default :attr:`InpaintRequest.preview_size` (pixels)."""


def preview_dimensions(width: int, height: int, size: int) -> tuple[int, int]:
    """The ``(width, height)`` in pixels of the previews of a ``width × height`` crop asked at ``size``: the crop
    scaled so that its longer side is ``min(size, max(width, height))`` (never enlarged), the shorter side rounded to
    the nearest pixel and at least 1.

    For example ``preview_dimensions(1024, 768, 256) == (256, 192)`` and ``preview_dimensions(100, 40, 256) ==
    (100, 40)``.
    """
    long_side = max(width, height)
    target = min(size, long_side)
    return max(1, round(width * target / long_side)), max(1, round(height * target / long_side))


def _require(condition: bool, message: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> None:
    if not condition:
        raise ProtocolError(code, message)


def _member(message: object, name: str, kind: type[WireEnum]) -> None:
    """Make ``message.name`` the member of ``kind`` it is or names (its wire string), as the codec does.

    Raises:
        ProtocolError(BAD_MESSAGE): it is neither.
    """
    value = getattr(message, name)
    try:
        object.__setattr__(message, name, kind(value))
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{name} {quote(value)} is not one of "
                                                   f"{', '.join(m.value for m in kind)}") from None


@dataclass(frozen=True)
class Plane:
    """A raw image: ``height × width × channels`` unsigned samples of :attr:`bits` bits, row-major, channels
    interleaved.

    ``channels`` is 1 (mask, 0 = keep, 255 = repaint), 3 (RGB) or 4 (RGBA, straight alpha).

    Raises:
        ProtocolError(INVALID_REQUEST): sides outside 1…:data:`MAX_SIDE`, unknown channel count, ``bits`` not one
            of :data:`SAMPLE_BITS`, or ``len(data) != width * height * channels * bits / 8``.
    """

    width: int
    height: int
    channels: int
    data: bytes | memoryview
    """The pixels: ``bytes``, or a 1-D memoryview of bytes that shares another buffer's memory (a frame that
    :func:`protocol.decode` read with ``views``; an array of the daemon's worker, ``daemon.worker.plane_data``)."""
    bits: int = 8
    """Bits per sample: 8 (each sample one byte, 0…255; the default, so a plane sent without it is 8-bit) or 16
    (each sample two bytes, little-endian, 0…65535; the same encoding as the 8-bit values, R'G'B' sRGB-encoded and
    straight alpha, with 65535 for 255). A 16-bit sample ``v`` holds the same value as the 8-bit ``round(v / 257)``;
    an 8-bit level ``u`` is ``257 × u`` in 16 bits."""

    def __post_init__(self) -> None:
        _require(1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE,
                 f"plane size {self.width}×{self.height} is outside 1…{MAX_SIDE}")
        _require(self.channels in (1, 3, 4), f"plane has {self.channels} channels; expected 1, 3 or 4")
        _require(self.bits in SAMPLE_BITS, f"plane has {self.bits}-bit samples; expected 8 or 16")
        expected = self.width * self.height * self.channels * self.bytes_per_sample
        _require(len(self.data) == expected,
                 f"plane of {self.width}×{self.height}×{self.channels} {self.bits}-bit samples needs {expected} "
                 f"bytes, got {len(self.data)}")

    @property
    def bytes_per_sample(self) -> int:
        """1 for 8-bit samples, 2 for 16-bit ones."""
        return self.bits // 8

    @property
    def pixels(self) -> int:
        """Number of pixels (width × height)."""
        return self.width * self.height


MODEL_STATES = ("", "built in", "unavailable", "not downloaded", "on disk", "loaded")
"""The values of :attr:`EngineInfo.state`: where the engine's model is (the daemon's ``ModelState``), "" from a daemon
that does not say."""


@dataclass(frozen=True)
class EngineInfo:
    """One engine the daemon offers: ``name`` is what a request puts in :attr:`FillOptions.engine`.

    ``kind`` is the backend (``"opencv"``, ``"diffusers"``), ``model`` the hub id or path it loads,
    ``available`` false when loading failed (``detail`` then says why), ``uses_prompt`` false for
    engines that ignore the prompt (classical inpainting).

    ``family`` is the model family of the daemon's registry (:class:`protocol.Family`; None for non-diffusion
    engines, and for a diffusers engine whose family is read from its model when it loads), ``loras`` the names of
    the registry's LoRAs a request to this engine may use (:attr:`FillOptions.loras`), ``embeddings`` the
    textual-inversion tokens it understands in a prompt, ``refiner`` whether :attr:`FillOptions.refiner_strength`
    may be above 0, ``options`` the names of the :data:`protocol.FILL_OPTIONS` rows the engine uses (a dialog shows
    only those; the others are ignored or, where a value other than the default cannot be honoured, refused).

    ``warming_up`` is true while the daemon loads the engine's model at start (``daemon.toml``'s ``preload``); a
    request to it meanwhile waits until that load ends, and then finds the model loaded.

    ``defaults`` holds the values its model family works best with where they differ from, or confirm, the table's
    (``{"num_inference_steps": 20, "guidance_scale": 8.0}`` for SDXL): numeric rows of :data:`protocol.FILL_OPTIONS`
    by name, each within its row's range (an int row's value a whole number); a dialog starts from them. Empty when
    the daemon does not know the family before loading the model.

    ``state`` is where its model is, one of :data:`MODEL_STATES`: ``built in`` (nothing to load), ``unavailable``,
    ``not downloaded`` (the first request downloads it), ``on disk`` or ``loaded`` (warm); the dialog shows it.
    ``bits`` is the depth of the pixels the engine generates for a 16-bit crop (:attr:`Plane.bits`): 16 for the
    engines that compute in floating point (the diffusion engines), 8 for the others (OpenCV, MI-GAN), whose fill of
    a 16-bit crop holds 8-bit levels (multiples of 257); every engine's variants of a 16-bit crop are 16-bit, the
    crop's own pixels exact, and an 8-bit crop's are 8-bit.

    ``licence`` names the licence of the engine's model (``"Apache 2.0"``, ``"FLUX.1 [dev] Non-Commercial
    License"``; "" when the daemon does not know it), and ``non_commercial`` is true when that licence forbids
    commercial use of the outputs or the model (the dialog and ``status`` warn). ``quantization`` is how the model's
    weights are held once loaded (``"none"``, ``"nf4"``, ``"int8"``, ``"fp8"``, ``"gguf"``, each possibly with
    ``"+offload"``; "" before it loads or for engines without weights to quantize).

    Raises:
        ProtocolError(BAD_MESSAGE): ``options`` names an option that is not in :data:`protocol.FILL_OPTIONS`, or
            ``defaults`` one that is not a numeric row, or a value outside its row's range, or ``bits`` is not one
            of :data:`SAMPLE_BITS`.
    """

    name: str
    kind: str
    model: str
    available: bool
    uses_prompt: bool
    detail: str = ""
    family: Family | None = None
    loras: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)
    refiner: bool = False
    options: list[str] = field(default_factory=lambda: list(FILL_OPTIONS))
    warming_up: bool = False
    defaults: dict[str, float] = field(default_factory=dict)
    bits: int = 8
    state: str = ""
    licence: str = ""
    non_commercial: bool = False
    quantization: str = ""

    def __post_init__(self) -> None:
        _require(self.state in MODEL_STATES, f"engine {quote(self.name)} has the state {quote(self.state)}; expected "
                                             f"one of {', '.join(MODEL_STATES)}", ErrorCode.BAD_MESSAGE)
        _require(self.bits in SAMPLE_BITS, f"engine {quote(self.name)} generates {self.bits}-bit pixels; expected 8 "
                                           "or 16", ErrorCode.BAD_MESSAGE)
        unknown = [name for name in self.options if name not in FILL_OPTIONS]
        _require(not unknown, f"engine {quote(self.name)} lists unknown options {quote(unknown)}",
                 ErrorCode.BAD_MESSAGE)
        for name, value in self.defaults.items():
            spec = FILL_OPTIONS.get(name)
            _require(spec is not None and spec.type in (int, float) and spec.minimum is not None
                     and spec.maximum is not None and spec.minimum <= value <= spec.maximum
                     and (spec.type is float or float(value).is_integer()),
                     f"engine {quote(self.name)} has a default {name}={value!r} that is no value of a number option",
                     ErrorCode.BAD_MESSAGE)

    @property
    def licence_note(self) -> str:
        """:attr:`licence` as the dialog and ``status`` show it, with ``"non-commercial use only"`` after it when
        :attr:`non_commercial` (``"FLUX.1 [dev] Non-Commercial License, non-commercial use only"``); "" when the
        daemon does not know the licence."""
        if not self.licence:
            return ""
        return f"{self.licence}, non-commercial use only" if self.non_commercial else self.licence


@dataclass(frozen=True)
class Hello:
    """First message of a connection, client → daemon.

    Attributes:
        protocol_version: the client's :data:`PROTOCOL_VERSION`.
        client: free text naming the client, e.g. ``"gimp-plugin/0.1 GIMP 3.0.4"`` (logged).
        token: the daemon's auth token (read from the token file the daemon writes on first start).

    Raises:
        ProtocolError(BAD_MESSAGE): ``client`` is longer than :data:`MAX_CLIENT_NAME_CHARS`.
    """

    type: ClassVar[str] = "hello"
    protocol_version: int
    client: str
    token: str

    def __post_init__(self) -> None:
        _require(len(self.client) <= MAX_CLIENT_NAME_CHARS,
                 f"the client name has {len(self.client)} characters; at most {MAX_CLIENT_NAME_CHARS} are allowed",
                 ErrorCode.BAD_MESSAGE)


@dataclass(frozen=True)
class Welcome:
    """Daemon → client reply to a valid :class:`Hello`: what this daemon is and offers.

    ``device`` is e.g. ``"cuda:0 (NVIDIA H100)"`` or ``"cpu"``; ``max_pixels`` the largest
    ``width × height`` a request may carry; ``token_owner`` whose token the Hello carried: ``"local"`` for the
    daemon's token file, else the name of a token that ``gimp-inpaint-daemon token add NAME`` made ("" from a
    daemon that does not say). Jobs take turns by it: the connections of one owner share one turn.
    """

    type: ClassVar[str] = "welcome"
    protocol_version: int
    daemon_version: str
    device: str
    engines: list[EngineInfo]
    max_pixels: int
    token_owner: str = ""


@dataclass(frozen=True)
class InpaintRequest:
    """Client → daemon: fill the masked part of an image crop.

    Attributes:
        job_id: client-chosen id, unique per connection (1…:data:`MAX_JOB_ID_CHARS` characters).
        x, y: the crop's top-left corner in the client's image (pixels); each :class:`Variant` is placed from it.
        image: the context crop, RGBA (4 channels), 8-bit, or 16-bit (:attr:`Plane.bits`) for an image deeper than
            8 bits (16-bit integer or floating point): its variants come back at the same depth.
        mask: same width and height, 1 channel, 8-bit, 255 = repaint, 0 = keep (diffusers' convention).
        options: every setting of the fill (:class:`protocol.FillOptions`, validated by its table); its
            ``engine`` names an :attr:`EngineInfo.name` of the :class:`Welcome`.
        preview_every: steps between :class:`Preview` messages (0…:data:`MAX_PREVIEW_EVERY`; 0, the default, asks for
            none): one after every inference step (:class:`Progress` counting) that is a multiple of it, except a
            variant's last step (its :class:`Variant` follows), as long as the client reads them (the daemon drops
            a preview rather than queue a second one) and only from engines that can show their picture forming
            (the diffusion engines; see ``docs/limits.md``). Not a fill option: it does not change the result.
        preview_size: the longest side of the previews (pixels, :data:`MIN_PREVIEW_SIZE`…:data:`MAX_PREVIEW_SIZE`,
            default :data:`DEFAULT_PREVIEW_SIZE`); a smaller crop's previews are its own size
            (:meth:`preview_dimensions`).

    Raises:
        ProtocolError(INVALID_REQUEST): image/mask shapes that disagree, a mask that is not 8-bit, an absurd offset,
            ``preview_every`` or ``preview_size`` out of range.
    """

    type: ClassVar[str] = "inpaint"
    job_id: str
    x: int
    y: int
    image: Plane
    mask: Plane
    options: FillOptions = field(default_factory=FillOptions)
    preview_every: int = 0
    preview_size: int = DEFAULT_PREVIEW_SIZE

    def __post_init__(self) -> None:
        _require(1 <= len(self.job_id) <= MAX_JOB_ID_CHARS, f"job_id must have 1…{MAX_JOB_ID_CHARS} characters")
        _require(self.image.channels == 4, f"image must be RGBA (4 channels), got {self.image.channels}")
        _require(self.mask.channels == 1, f"mask must have 1 channel, got {self.mask.channels}")
        _require(self.mask.bits == 8, f"mask must have 8-bit samples, got {self.mask.bits}-bit")
        _require((self.mask.width, self.mask.height) == (self.image.width, self.image.height),
                 f"mask {self.mask.width}×{self.mask.height} ≠ image {self.image.width}×{self.image.height}")
        _require(abs(self.x) <= 10 * MAX_SIDE and abs(self.y) <= 10 * MAX_SIDE, "crop offset is absurd")
        _require(0 <= self.preview_every <= MAX_PREVIEW_EVERY,
                 f"preview_every {self.preview_every} is outside 0…{MAX_PREVIEW_EVERY} (steps; 0 = no previews)")
        _require(MIN_PREVIEW_SIZE <= self.preview_size <= MAX_PREVIEW_SIZE,
                 f"preview_size {self.preview_size} is outside {MIN_PREVIEW_SIZE}…{MAX_PREVIEW_SIZE} (pixels)")

    def preview_dimensions(self) -> tuple[int, int]:
        """The ``(width, height)`` of every :class:`Preview` of this job (pixels): :func:`preview_dimensions` of the
        crop at :attr:`preview_size`."""
        return preview_dimensions(self.image.width, self.image.height, self.preview_size)


@dataclass(frozen=True)
class Accepted:
    """Daemon → client: the job is queued; ``position`` jobs run before it (0 = next)."""

    type: ClassVar[str] = "accepted"
    job_id: str
    position: int


@dataclass(frozen=True)
class Progress:
    """Daemon → client: ``step`` of ``total`` units of ``stage`` done (:class:`protocol.Stage`).

    ``inference`` counts denoising steps × variants (refining passes included); ``download`` counts bytes of the
    model files being downloaded; ``load`` is sent once as ``(0, 0)`` when a model starts loading.

    Raises:
        ProtocolError(BAD_MESSAGE): ``step`` outside 0…``total``, or ``stage`` not a :class:`protocol.Stage` (a
            member's wire string becomes the member).
    """

    type: ClassVar[str] = "progress"
    job_id: str
    step: int
    total: int
    stage: Stage = Stage.INFERENCE

    def __post_init__(self) -> None:
        _require(0 <= self.step <= self.total, f"progress {self.step}/{self.total} is inconsistent",
                 ErrorCode.BAD_MESSAGE)
        _member(self, "stage", Stage)


@dataclass(frozen=True)
class Preview:
    """Daemon → client: the job's picture as it forms, after inference step ``step`` of ``total`` (the counting of
    :class:`Progress`), sent as the request's :attr:`InpaintRequest.preview_every` asks.

    The image is the whole crop (not a variant's box) at :meth:`InpaintRequest.preview_dimensions`: the engine's
    picture of the moment (decoded from its latents, roughly) where the blend mask repaints, the request's own
    pixels elsewhere. It is a sketch to look at, never pasted: only the :class:`Variant` messages are the result.

    Raises:
        ProtocolError(BAD_MESSAGE): ``step`` outside 1…``total``, an image that is not 8-bit RGBA, or a side longer
            than :data:`MAX_PREVIEW_SIZE`.
    """

    type: ClassVar[str] = "preview"
    job_id: str
    step: int
    total: int
    image: Plane

    def __post_init__(self) -> None:
        _require(1 <= self.step <= self.total, f"preview at step {self.step}/{self.total} is inconsistent",
                 ErrorCode.BAD_MESSAGE)
        _require(self.image.channels == 4, f"a preview must be RGBA (4 channels), got {self.image.channels}",
                 ErrorCode.BAD_MESSAGE)
        _require(self.image.bits == 8, f"a preview must be 8-bit, got {self.image.bits}-bit", ErrorCode.BAD_MESSAGE)
        _require(max(self.image.width, self.image.height) <= MAX_PREVIEW_SIZE,
                 f"a preview of {self.image.width}×{self.image.height} exceeds {MAX_PREVIEW_SIZE} pixels a side",
                 ErrorCode.BAD_MESSAGE)


@dataclass(frozen=True)
class Variant:
    """Daemon → client: one finished variant of a job, sent as soon as it is done (before the next one starts).

    Only the bounding box of the blend mask's non-zero pixels travels: outside it the result is the request's own
    pixels, so a client that needs the whole crop pastes this box into it at ``(x − request.x, y − request.y)``.

    Attributes:
        job_id: the request's ``job_id``.
        index: 0-based, in seed order (variant ``index`` used seed ``seed``).
        x, y: the box's top-left corner in the client's image (pixels), inside the request's crop.
        image: RGBA, the box's size, at the request image's depth (:attr:`Plane.bits`). Generated pixels where
            ``mask`` > 0; exactly the request's pixels where ``mask`` == 0 (diffusers' ``apply_overlay``).
        mask: 1 channel, 8-bit, the blend mask (grown and feathered selection) inside the box: the final picture is
            ``request_image × (1 − mask/255) + image × mask/255``, which :func:`client.imaging.compose`
            computes and an editor gets by using ``mask`` as the new layer's mask.
        seed: the seed this variant was generated with (0…:data:`protocol.SEED_MAX`).
        timings: seconds per stage, e.g. ``{"queue": 0.0, "load": 0.0, "inference": 3.1, "total": 3.3}``.

    Raises:
        ProtocolError(BAD_MESSAGE): the image is not RGBA, the mask not 1-channel and 8-bit, their sizes differ, or
            the index or seed is out of range.
    """

    type: ClassVar[str] = "variant"
    job_id: str
    index: int
    x: int
    y: int
    image: Plane
    mask: Plane
    seed: int
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.image.channels == 4 and self.mask.channels == 1 and self.mask.bits == 8,
                 "variant image must be RGBA and its mask 1-channel 8-bit", ErrorCode.BAD_MESSAGE)
        _require((self.mask.width, self.mask.height) == (self.image.width, self.image.height),
                 "variant mask and image sizes differ", ErrorCode.BAD_MESSAGE)
        _require(0 <= self.index < MAX_VARIANTS and 0 <= self.seed <= SEED_MAX,
                 f"variant {self.index} with seed {self.seed} is out of range", ErrorCode.BAD_MESSAGE)


@dataclass(frozen=True)
class Result:
    """Daemon → client: the job is done; its ``num_variants`` :class:`Variant` messages were sent before this one."""

    type: ClassVar[str] = "result"
    job_id: str
    num_variants: int

    def __post_init__(self) -> None:
        _require(0 < self.num_variants <= MAX_VARIANTS, f"a result of {self.num_variants} variants is out of range",
                 ErrorCode.BAD_MESSAGE)


@dataclass(frozen=True)
class Cancel:
    """Client → daemon: cancel a queued or running job of this connection (between denoising steps)."""

    type: ClassVar[str] = "cancel"
    job_id: str


@dataclass(frozen=True)
class Error:
    """Daemon → client: something failed. ``job_id`` is set when it concerns one job.

    ``message`` is meant for the user and says what to do. Variants of the job sent before an error are void.

    Raises:
        ProtocolError(BAD_MESSAGE): ``code`` is not an :class:`ErrorCode` (a member's wire string becomes the member).
    """

    type: ClassVar[str] = "error"
    code: ErrorCode
    message: str
    job_id: str | None = None

    def __post_init__(self) -> None:
        _member(self, "code", ErrorCode)


Message = Hello | Welcome | InpaintRequest | Accepted | Progress | Preview | Variant | Result | Cancel | Error
"""Any top-level message."""

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.type: cls for cls in (Hello, Welcome, InpaintRequest, Accepted, Progress, Preview, Variant, Result, Cancel,
                              Error)
}
