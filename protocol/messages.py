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
from .quoting import quote

PROTOCOL_VERSION = 3
"""Bumped on every incompatible change of the messages below (2: schedulers, LoRAs, refiner, ControlNet scale,
model families and progress stages; 3: the ``busy`` error code, which an older client's decoder refuses)."""

MAX_SIDE = 16384
"""Largest width or height (pixels) of any plane, whatever the daemon's pixel limit."""

MAX_VARIANTS = 16
"""Most variants one request may ask for."""

SEED_MAX = 2**31 - 1
"""Largest seed: seeds are 0…2³¹−1 everywhere (the daemon's random pick, this validation, the GIMP dialog), the
range of a GIMP int argument (a ``gint``; GIMP 3 has no 64-bit one, and its ``uint`` argument cannot hold −1,
"random"), so a seed read from a layer name can be typed back into the Seed field. ``torch.Generator.manual_seed``
and NumPy accept every one."""

MAX_PROMPT_CHARS = 4096
"""Longest ``prompt`` or ``negative_prompt`` (characters). SD's CLIP text encoder reads only 77 tokens, so this
never cuts a useful prompt; it bounds a request's frame (:func:`protocol.max_frame_bytes`)."""

MAX_JOB_ID_CHARS = 128
"""Longest :attr:`InpaintRequest.job_id` (characters)."""

MAX_ENGINE_NAME_CHARS = 128
"""Longest engine name a request may carry (characters); longer names cannot exist in a daemon's configuration."""

SCHEDULERS = ("default", "ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde_karras",
              "lms_karras", "unipc")
"""Values of :attr:`InpaintRequest.scheduler`: ``default`` keeps the model's own scheduler; the others are the
common set of diffusers' "Schedulers" guide (A1111 names: ``euler_a`` = Euler Ancestral, ``dpmpp_2m_karras`` =
DPM++ 2M Karras, …). The daemon maps them to diffusers classes (:mod:`daemon.engines.options`)."""

MAX_LORAS = 8
"""Most LoRAs one request may apply at once."""

LORA_WEIGHT_MAX = 4.0
"""Largest absolute LoRA weight (diffusers ``set_adapters`` ``adapter_weights``); 1.0 is the LoRA as trained."""

PROGRESS_STAGES = ("download", "load", "inference")
"""Values of :attr:`Progress.stage`: ``download`` counts bytes of a model being downloaded, ``load`` marks a model
being loaded (no steps), ``inference`` counts denoising steps."""

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

    ``family`` is the model family of the daemon's registry (``sd-inpaint``, ``sdxl-inpaint``,
    ``kandinsky22-inpaint``, ``sd``, ``sdxl``, ``sd-controlnet-inpaint``; empty for non-diffusion engines),
    ``loras`` the names of the registry's LoRAs a request to this engine may use
    (:attr:`InpaintRequest.loras`), ``embeddings`` the textual-inversion tokens it understands in a prompt,
    ``refiner`` whether :attr:`InpaintRequest.refiner_strength` may be above 0.
    """

    name: str
    kind: str
    model: str
    available: bool
    uses_prompt: bool
    detail: str = ""
    family: str = ""
    loras: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)
    refiner: bool = False


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
        seed: 0…:data:`SEED_MAX` (2³¹−1), or −1 for a random seed per variant (the seeds used come back in the
            result).
        num_variants: 1…:data:`MAX_VARIANTS` results from consecutive seeds.
        grow: pixels by which the mask is dilated before inpainting, 0…1024.
        feather: Gaussian blur radius (pixels) of the blend mask's edge, 0…1024 (diffusers ``blur_factor``).
        scheduler: one of :data:`SCHEDULERS`; ``default`` keeps the model's scheduler.
        loras: LoRA name (from :attr:`EngineInfo.loras`) → weight in [−:data:`LORA_WEIGHT_MAX`,
            :data:`LORA_WEIGHT_MAX`], at most :data:`MAX_LORAS` (diffusers ``set_adapters``).
        refiner_strength: 0 ≤ value < 1, the share of the denoising done by a second, refining pass
            (0 = none): the model's SDXL refiner where the registry names one (the base stops at
            ``denoising_end = 1 − strength × refiner_strength``, the refiner starts there), else a second pass
            of the same model with ``strength = refiner_strength`` (image-to-image through ``from_pipe`` on the
            latents for 4-channel UNets, inpainting again on the pixels for 9-channel ones). Engines whose
            :attr:`EngineInfo.refiner` is false refuse a value above 0.
        controlnet_conditioning_scale: 0…2, the ControlNet's weight (diffusers name); only
            ``sd-controlnet-inpaint`` engines accept a value other than 1.

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
    scheduler: str = "default"
    loras: dict[str, float] = field(default_factory=dict)
    refiner_strength: float = 0.0
    controlnet_conditioning_scale: float = 1.0

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
        _require(self.scheduler in SCHEDULERS,
                 f"scheduler {quote(self.scheduler)} is not one of {', '.join(SCHEDULERS)}")
        _require(len(self.loras) <= MAX_LORAS, f"{len(self.loras)} LoRAs requested; at most {MAX_LORAS} are allowed")
        for lora, weight in self.loras.items():
            _require(1 <= len(lora) <= MAX_ENGINE_NAME_CHARS,
                     f"LoRA names must have 1…{MAX_ENGINE_NAME_CHARS} characters")
            _require_range(f"the weight of LoRA {quote(lora)}", weight, -LORA_WEIGHT_MAX, LORA_WEIGHT_MAX)
        _require(0.0 <= self.refiner_strength < 1.0 and math.isfinite(self.refiner_strength),
                 f"refiner_strength={self.refiner_strength!r} is outside [0, 1)")
        _require_range("controlnet_conditioning_scale", self.controlnet_conditioning_scale, 0.0, 2.0)


@dataclass(frozen=True)
class Accepted:
    """Daemon → client: the job is queued; ``position`` jobs run before it (0 = next)."""

    type: ClassVar[str] = "accepted"
    job_id: str
    position: int


@dataclass(frozen=True)
class Progress:
    """Daemon → client: ``step`` of ``total`` units of ``stage`` done (:data:`PROGRESS_STAGES`).

    ``inference`` counts denoising steps × variants (refining passes included); ``download`` counts bytes of the
    model files being downloaded; ``load`` is sent once as ``(0, 0)`` when a model starts loading.
    """

    type: ClassVar[str] = "progress"
    job_id: str
    step: int
    total: int
    stage: str = "inference"

    def __post_init__(self) -> None:
        _require(0 <= self.step <= self.total, f"progress {self.step}/{self.total} is inconsistent",
                 ErrorCode.BAD_MESSAGE)
        _require(self.stage in PROGRESS_STAGES, f"unknown progress stage {quote(self.stage)}", ErrorCode.BAD_MESSAGE)


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
        _require(self.code in {c.value for c in ErrorCode}, f"unknown error code {quote(self.code)}",
                 ErrorCode.BAD_MESSAGE)


Message = Hello | Welcome | InpaintRequest | Accepted | Progress | Result | Cancel | Error
"""Any top-level message."""

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.type: cls for cls in (Hello, Welcome, InpaintRequest, Accepted, Progress, Result, Cancel, Error)
}
