"""The closed sets of the protocol: each travels as its string value and is an :class:`enum.Enum` on both sides.

:class:`protocol.errors.ErrorCode` is one too; the codec (:mod:`protocol.codec`) turns a wire string into the
member and refuses a string that is none of them.
"""

from __future__ import annotations

from enum import Enum


class WireEnum(str, Enum):
    """An enum whose members are their wire strings: ``str(member)`` and ``f"{member}"`` give the value
    (what :class:`enum.StrEnum` does from Python 3.11; this one also runs on 3.10)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class LabelledEnum(WireEnum):
    """A :class:`WireEnum` whose members also have a readable name, :attr:`label` (from :data:`_LABELS`), for the
    GIMP dialog's lists and the CLI's help."""

    @property
    def label(self) -> str:
        """The member's readable name, e.g. ``"DPM++ 2M Karras"`` or ``"Remove object"``."""
        return _LABELS[self]


class Scheduler(LabelledEnum):
    """Denoising schedulers a request may ask for: ``default`` keeps the model's own; the others are the common
    set of diffusers' "Schedulers" guide, by their A1111 names (:attr:`label`). The daemon maps each to a diffusers
    class (:mod:`daemon.engines.options`)."""

    DEFAULT = "default"
    DDIM = "ddim"
    EULER = "euler"
    EULER_A = "euler_a"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_2M_KARRAS = "dpmpp_2m_karras"
    DPMPP_2M_SDE_KARRAS = "dpmpp_2m_sde_karras"
    LMS_KARRAS = "lms_karras"
    UNIPC = "unipc"


class FillMode(LabelledEnum):
    """How the hole is prepared before an engine fills it: Krita AI Diffusion's inpaint modes (``InpaintMode`` of
    its ``ai_diffusion/api.py``) that a daemon can run without a custom workflow. :func:`protocol.resolve_fill_mode`
    turns ``auto`` into one of the others; the pre-fills are the daemon's (``daemon/prefill.py``)."""

    AUTO = "auto"
    FILL = "fill"
    REMOVE = "remove"
    EXPAND = "expand"


_LABELS: dict[LabelledEnum, str] = {
    Scheduler.DEFAULT: "Model default", Scheduler.DDIM: "DDIM", Scheduler.EULER: "Euler",
    Scheduler.EULER_A: "Euler Ancestral", Scheduler.DPMPP_2M: "DPM++ 2M", Scheduler.DPMPP_2M_KARRAS: "DPM++ 2M Karras",
    Scheduler.DPMPP_2M_SDE_KARRAS: "DPM++ 2M SDE Karras", Scheduler.LMS_KARRAS: "LMS Karras", Scheduler.UNIPC: "UniPC",
    FillMode.AUTO: "Automatic", FillMode.FILL: "Fill from the prompt", FillMode.REMOVE: "Remove object",
    FillMode.EXPAND: "Expand the canvas",
}
"""Every :class:`LabelledEnum` member's readable name."""


class Stage(WireEnum):
    """What a :class:`protocol.Progress` counts: ``download`` bytes of a model being downloaded, ``load`` a model
    being loaded (no steps, sent once as ``(0, 0)``), ``inference`` denoising steps."""

    DOWNLOAD = "download"
    LOAD = "load"
    INFERENCE = "inference"


class Family(WireEnum):
    """Model families of the daemon's registry (:mod:`daemon.engines.families`), as the handshake reports them.

    ``sd-inpaint``: a 9-channel Stable Diffusion 1.x/2.x inpainting UNet; ``sd``: a plain 4-channel checkpoint
    inpainting through the same pipeline; ``sdxl-inpaint`` / ``sdxl``: the same for SDXL; ``kandinsky22-inpaint``:
    Kandinsky 2.2's combined inpainting pipeline; ``sd-controlnet-inpaint``: SD 1.5 with an inpainting ControlNet.

    The transformer (flow-matching) families of 2024–2026, each run by its own diffusers pipeline (protocol 6):
    ``sd3-inpaint`` (Stable Diffusion 3/3.5), ``flux-fill`` (FLUX.1 Fill), ``flux-kontext-inpaint`` (FLUX.1 Kontext:
    the prompt is an instruction), ``chroma-inpaint`` (Chroma), ``flux2-klein-inpaint`` (FLUX.2 klein),
    ``z-image-inpaint`` (Z-Image) and ``qwen-image-inpaint`` (Qwen-Image).
    """

    SD_INPAINT = "sd-inpaint"
    SD = "sd"
    SDXL_INPAINT = "sdxl-inpaint"
    SDXL = "sdxl"
    KANDINSKY22_INPAINT = "kandinsky22-inpaint"
    SD_CONTROLNET_INPAINT = "sd-controlnet-inpaint"
    SD3_INPAINT = "sd3-inpaint"
    FLUX_FILL = "flux-fill"
    FLUX_KONTEXT_INPAINT = "flux-kontext-inpaint"
    CHROMA_INPAINT = "chroma-inpaint"
    FLUX2_KLEIN_INPAINT = "flux2-klein-inpaint"
    Z_IMAGE_INPAINT = "z-image-inpaint"
    QWEN_IMAGE_INPAINT = "qwen-image-inpaint"
