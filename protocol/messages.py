"""Typed messages of the gimp-inpaint protocol (version :data:`PROTOCOL_VERSION`).

Every message is a frozen dataclass; its ``__post_init__`` checks value ranges so that an
inconsistent message cannot exist, whether built locally or decoded from the wire (the codec in
:mod:`protocol.codec` checks types first). Images travel as :class:`Plane`: raw interleaved ``u8``
bytes with explicit width, height and channel count, never PNG or base64.

Conversation::

    client → Hello            daemon → Welcome   (or Error UNAUTHORIZED / VERSION_MISMATCH, then close)
    client → InpaintRequest   daemon → Accepted, Progress…, Result   (or Error with the job id)
    client → Cancel           daemon → Error CANCELLED for that job (if it had not finished)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from .errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
"""Bumped on every incompatible change of the messages below."""

MAX_SIDE = 16384
"""Largest width or height (pixels) of any plane, whatever the daemon's pixel limit."""

MAX_VARIANTS = 16
"""Most variants one request may ask for."""

SEED_MAX = 2**32 - 1
"""Seeds are unsigned 32-bit (what ``torch.Generator.manual_seed`` and NumPy both accept)."""

MAX_PROMPT_CHARS = 4096
"""Longest ``prompt`` or ``negative_prompt`` (characters). SD's CLIP text encoder reads only 77 tokens, so this
never cuts a useful prompt; it bounds a request's frame (:func:`protocol.max_frame_bytes`)."""

MAX_JOB_ID_CHARS = 128
"""Longest :attr:`InpaintRequest.job_id` (characters)."""

MAX_ENGINE_NAME_CHARS = 128
"""Longest engine name a request may carry (characters); longer names cannot exist in a daemon's configuration."""

MAX_CLIENT_NAME_CHARS = 200
"""Longest :attr:`Hello.client` (characters): the name is logged, and the hello is read before authentication."""


def _require(condition: bool, message: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> None:
    if not condition:
        raise ProtocolError(code, message)


def _require_range(name: str, value: float, low: float, high: float) -> None:
    _require(math.isfinite(value) and low <= value <= high, f"{name}={value!r} is outside [{low}, {high}]")


@dataclass(frozen=True)
class Plane:
    """A raw image: ``height × width × channels`` unsigned bytes, row-major, channels interleaved.

    ``channels`` is 1 (mask, 0 = keep, 255 = repaint), 3 (RGB) or 4 (RGBA, straight alpha).

    Raises:
        ProtocolError(INVALID_REQUEST): sides outside 1…:data:`MAX_SIDE`, unknown channel count,
            or ``len(data) != width * height * channels``.
    """

    width: int
    height: int
    channels: int
    data: bytes

    def __post_init__(self) -> None:
        _require(1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE,
                 f"plane size {self.width}×{self.height} is outside 1…{MAX_SIDE}")
        _require(self.channels in (1, 3, 4), f"plane has {self.channels} channels; expected 1, 3 or 4")
        expected = self.width * self.height * self.channels
        _require(len(self.data) == expected,
                 f"plane of {self.width}×{self.height}×{self.channels} needs {expected} bytes, got {len(self.data)}")

    @property
    def pixels(self) -> int:
        """Number of pixels (width × height)."""
        return self.width * self.height


@dataclass(frozen=True)
class EngineInfo:
    """One engine the daemon offers: ``name`` is what a request puts in :attr:`InpaintRequest.engine`.

    ``kind`` is the backend (``"opencv"``, ``"diffusers"``), ``model`` the hub id or path it loads,
    ``available`` false when loading failed (``detail`` then says why), ``uses_prompt`` false for
    engines that ignore the prompt (classical inpainting).
    """

    name: str
    kind: str
    model: str
    available: bool
    uses_prompt: bool
    detail: str = ""


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
    ``width × height`` a request may carry.
    """

    type: ClassVar[str] = "welcome"
    protocol_version: int
    daemon_version: str
    device: str
    engines: list[EngineInfo]
    max_pixels: int


@dataclass(frozen=True)
class InpaintRequest:
    """Client → daemon: fill the masked part of an image crop.

    Attributes:
        job_id: client-chosen id, unique per connection (1…:data:`MAX_JOB_ID_CHARS` characters).
        engine: an :attr:`EngineInfo.name` from the :class:`Welcome` (≤ :data:`MAX_ENGINE_NAME_CHARS` characters).
        x, y: the crop's top-left corner in the client's image (pixels); echoed in the result.
        image: the context crop, RGBA (4 channels).
        mask: same width and height, 1 channel, 255 = repaint, 0 = keep (diffusers' convention).
        prompt, negative_prompt: text conditioning; may be empty; at most :data:`MAX_PROMPT_CHARS` characters each.
        strength: 0 < strength ≤ 1, how much of the masked area is re-noised (diffusers ``strength``).
        guidance_scale: classifier-free guidance weight, 0…50 (diffusers ``guidance_scale``).
        num_inference_steps: denoising steps, 1…500.
        seed: 0…2³²−1, or −1 for a random seed per variant (the seeds used come back in the result).
        num_variants: 1…:data:`MAX_VARIANTS` results from consecutive seeds.
        grow: pixels by which the mask is dilated before inpainting, 0…1024.
        feather: Gaussian blur radius (pixels) of the blend mask's edge, 0…1024 (diffusers ``blur_factor``).

    Raises:
        ProtocolError(INVALID_REQUEST): any value out of its range, or image/mask shapes that disagree.
    """

    type: ClassVar[str] = "inpaint"
    job_id: str
    engine: str
    x: int
    y: int
    image: Plane
    mask: Plane
    prompt: str = ""
    negative_prompt: str = ""
    strength: float = 1.0
    guidance_scale: float = 7.5
    num_inference_steps: int = 25
    seed: int = -1
    num_variants: int = 1
    grow: int = 0
    feather: int = 8

    def __post_init__(self) -> None:
        _require(1 <= len(self.job_id) <= MAX_JOB_ID_CHARS, f"job_id must have 1…{MAX_JOB_ID_CHARS} characters")
        _require(len(self.engine) <= MAX_ENGINE_NAME_CHARS,
                 f"the engine name has {len(self.engine)} characters; at most {MAX_ENGINE_NAME_CHARS} are allowed")
        for name, text in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt)):
            _require(len(text) <= MAX_PROMPT_CHARS,
                     f"{name} has {len(text)} characters; at most {MAX_PROMPT_CHARS} are allowed")
        _require(self.image.channels == 4, f"image must be RGBA (4 channels), got {self.image.channels}")
        _require(self.mask.channels == 1, f"mask must have 1 channel, got {self.mask.channels}")
        _require((self.mask.width, self.mask.height) == (self.image.width, self.image.height),
                 f"mask {self.mask.width}×{self.mask.height} ≠ image {self.image.width}×{self.image.height}")
        _require(0.0 < self.strength <= 1.0 and math.isfinite(self.strength),
                 f"strength={self.strength!r} is outside (0, 1]")
        _require_range("guidance_scale", self.guidance_scale, 0.0, 50.0)
        _require_range("num_inference_steps", self.num_inference_steps, 1, 500)
        _require(self.seed == -1 or 0 <= self.seed <= SEED_MAX, f"seed={self.seed} is outside -1 or 0…{SEED_MAX}")
        _require_range("num_variants", self.num_variants, 1, MAX_VARIANTS)
        _require_range("grow", self.grow, 0, 1024)
        _require_range("feather", self.feather, 0, 1024)
        _require(abs(self.x) <= 10 * MAX_SIDE and abs(self.y) <= 10 * MAX_SIDE, "crop offset is absurd")


@dataclass(frozen=True)
class Accepted:
    """Daemon → client: the job is queued; ``position`` jobs run before it (0 = next)."""

    type: ClassVar[str] = "accepted"
    job_id: str
    position: int


@dataclass(frozen=True)
class Progress:
    """Daemon → client: ``step`` of ``total`` units done (denoising steps × variants for diffusion)."""

    type: ClassVar[str] = "progress"
    job_id: str
    step: int
    total: int

    def __post_init__(self) -> None:
        _require(0 <= self.step <= self.total, f"progress {self.step}/{self.total} is inconsistent",
                 ErrorCode.BAD_MESSAGE)


@dataclass(frozen=True)
class Variant:
    """One result of a job, placed at ``(x, y)`` in the client's image (the request's crop origin).

    Attributes:
        image: RGBA, the crop's size. Generated pixels where ``mask`` > 0; exactly the request's
            pixels where ``mask`` == 0 (diffusers' ``apply_overlay``).
        mask: 1 channel, the blend mask (grown and feathered selection): the final picture is
            ``request_image × (1 − mask/255) + image × mask/255``, which :func:`client.imaging.compose`
            computes and an editor gets by using ``mask`` as the new layer's mask.
        seed: the seed this variant was generated with.
        timings: seconds per stage, e.g. ``{"queue": 0.0, "inference": 3.1, "total": 3.3}``.
    """

    x: int
    y: int
    image: Plane
    mask: Plane
    seed: int
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.image.channels == 4 and self.mask.channels == 1,
                 "variant image must be RGBA and its mask 1-channel", ErrorCode.BAD_MESSAGE)
        _require((self.mask.width, self.mask.height) == (self.image.width, self.image.height),
                 "variant mask and image sizes differ", ErrorCode.BAD_MESSAGE)


@dataclass(frozen=True)
class Result:
    """Daemon → client: the finished job, one :class:`Variant` per requested variant."""

    type: ClassVar[str] = "result"
    job_id: str
    variants: list[Variant]


@dataclass(frozen=True)
class Cancel:
    """Client → daemon: cancel a queued or running job of this connection (between denoising steps)."""

    type: ClassVar[str] = "cancel"
    job_id: str


@dataclass(frozen=True)
class Error:
    """Daemon → client: something failed. ``job_id`` is set when it concerns one job.

    ``code`` is an :class:`ErrorCode` value; ``message`` is meant for the user and says what to do.
    """

    type: ClassVar[str] = "error"
    code: str
    message: str
    job_id: str | None = None

    def __post_init__(self) -> None:
        _require(self.code in {c.value for c in ErrorCode}, f"unknown error code {self.code!r}",
                 ErrorCode.BAD_MESSAGE)


Message = Hello | Welcome | InpaintRequest | Accepted | Progress | Result | Cancel | Error
"""Any top-level message."""

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.type: cls for cls in (Hello, Welcome, InpaintRequest, Accepted, Progress, Result, Cancel, Error)
}
