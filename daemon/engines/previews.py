"""Previews of a diffusion job's picture as it forms: the latents of a denoising step decoded cheaply to RGB.

Two decoders, both far cheaper than the model's own autoencoder, for the latent spaces of
:data:`LATENT_SPACES` (keyed by :attr:`daemon.engines.family.FamilyStrategy.architecture`):

- :class:`TinyAutoencoderPreviewer`: diffusers' ``AutoencoderTiny``, the tiny distilled autoencoders TAESD
  (Ollin Boer Bohan, ``madebyollin/taesd`` for SD 1.x/2.x, ``madebyollin/taesdxl`` for SDXL; about 10 MB each),
  which decode the latents the pipeline denoises as they are (diffusers' AutoencoderTiny documentation: its
  ``scaling_factor`` is 1.0, so it takes the scaled latents that the UNet sees), to pixels at the model's size;
- :class:`LinearPreviewer`: each latent pixel's channels (4 for SD and SDXL, 16 for SD 3, FLUX.1 and Qwen-Image)
  mapped to RGB by a fixed C×3 matrix and a bias, at the latents' resolution (an eighth of the model's size), the
  "latent to RGB" preview of ComfyUI (``latent_preview.py``'s ``Latent2RGBPreviewer``: ``linear(latents, factors)``
  then ``(x + 1) / 2``, clamped).

Which one a model uses is its ``previews`` key in ``daemon.toml`` (:attr:`daemon.registry.ModelSpec.previews`,
:func:`load_previewer`): ``"auto"`` (the default: the family's TAESD when it is already in the Hugging Face cache,
read without the network, else the linear map), ``"taesd"`` (the family's TAESD, downloaded like the model on its
first load when it is not cached), ``"linear"``, ``"off"`` (no previews), or the hub id or folder of another
``AutoencoderTiny`` for the model's latents. A preview decoder that cannot be had falls back to the linear map with
a log line: previews never make a fill fail. Kandinsky 2.2's MoVQ latents and FLUX.2 klein's 32 batch-normalised
channels have neither a tiny autoencoder nor linear factors here, so their jobs send no previews unless ``previews``
names an autoencoder; Qwen-Image's (Wan 2.1's autoencoder) have the linear map only.

The previews are of the current latents ``x_t`` that diffusers' ``callback_on_step_end`` hands over (not the
scheduler's prediction of the final image), so early ones are mostly noise and the picture sharpens step by step.

Importing this module is cheap: torch and diffusers are imported inside the functions.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import LoadProgress
from .loading import cached_folder, fetch

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

AUTO, TAESD, LINEAR, OFF = "auto", "taesd", "linear", "off"
"""The ``previews`` values of ``daemon.toml`` with a meaning of their own (any other value names an
``AutoencoderTiny``: a hub id or a folder)."""

TINY_AUTOENCODER_CONFIG = "config.json"
"""The file whose presence in the Hugging Face cache means a tiny autoencoder is there (``auto``)."""


@dataclass(frozen=True)
class LatentSpace:
    """How the latents of one architecture are previewed.

    Attributes:
        factors: the linear map's rows (one per latent channel) of R, G, B weights.
        bias: added to R, G, B after the map.
        tiny_autoencoder: the hub id of its TAESD (diffusers ``AutoencoderTiny`` format); ``""``: none known.
    """

    factors: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float]
    tiny_autoencoder: str = ""


FLUX1_LATENTS = LatentSpace(
    # ComfyUI comfy/latent_formats.py, class Flux, latent_rgb_factors and latent_rgb_factors_bias
    factors=((-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433),
             (-0.0174, 0.0160, 0.0617), (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115),
             (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259), (-0.0245, 0.0250, 0.1180),
             (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
             (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499),
             (-0.1262, -0.0982, -0.0778)),
    bias=(-0.0329, -0.0718, -0.0851),
    tiny_autoencoder="madebyollin/taef1")
"""FLUX.1's autoencoder's 16 channels, shared by FLUX.1 Fill and Kontext, Chroma and Z-Image."""

WAN21_LATENTS = LatentSpace(
    # ComfyUI comfy/latent_formats.py, class Wan21 (Qwen-Image's autoencoder), latent_rgb_factors and bias
    factors=((-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747),
             (0.0372, 0.2344, 0.1420), (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665),
             (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975), (-0.0412, 0.0267, -0.1364),
             (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
             (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950),
             (0.1984, 0.0913, 0.1861)),
    bias=(-0.1835, -0.0868, -0.3360))
"""Wan 2.1's autoencoder's 16 channels, Qwen-Image's (no tiny autoencoder known)."""

LATENT_SPACES: dict[str, LatentSpace] = {
    "sd": LatentSpace(
        # ComfyUI comfy/latent_formats.py, class SD15, latent_rgb_factors (no bias); SD 2.x has the same autoencoder
        factors=((0.3512, 0.2297, 0.3227),
                 (0.3250, 0.4974, 0.2350),
                 (-0.2829, 0.1762, 0.2721),
                 (-0.2120, -0.2616, -0.7177)),
        bias=(0.0, 0.0, 0.0),
        tiny_autoencoder="madebyollin/taesd"),
    "sdxl": LatentSpace(
        # ComfyUI comfy/latent_formats.py, class SDXL, latent_rgb_factors and latent_rgb_factors_bias
        factors=((0.3651, 0.4232, 0.4341),
                 (-0.2533, -0.0042, 0.1068),
                 (0.1076, 0.1111, -0.0362),
                 (-0.3165, -0.2492, -0.2188)),
        bias=(0.1084, -0.0175, -0.0011),
        tiny_autoencoder="madebyollin/taesdxl"),
    "sd3": LatentSpace(
        # ComfyUI comfy/latent_formats.py, class SD3, latent_rgb_factors and latent_rgb_factors_bias
        factors=((-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458),
                 (0.0856, 0.0339, 0.0902), (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309),
                 (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358), (-0.0194, 0.0020, 0.0669),
                 (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
                 (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293),
                 (-0.1448, -0.1463, -0.1189)),
        bias=(0.2394, 0.2135, 0.1925),
        tiny_autoencoder="madebyollin/taesd3"),
    "flux-fill": FLUX1_LATENTS, "flux-kontext": FLUX1_LATENTS, "chroma": FLUX1_LATENTS, "z-image": FLUX1_LATENTS,
    "qwen-image": WAN21_LATENTS,
}
"""Preview decoding of each :attr:`daemon.engines.family.FamilyStrategy.architecture` that has one (not
``"kandinsky22"`` or ``"flux2-klein"``). The factors apply to the latents as the denoiser sees them (SD and SDXL:
scaled by the autoencoder's ``scaling_factor``; SD 3 and FLUX.1: shifted by its ``shift_factor`` and scaled; Wan 2.1:
normalised by its ``latents_mean`` and ``latents_std``), as ComfyUI applies them to its sampler's, and as
:meth:`daemon.engines.family.FamilyStrategy.preview_latents` hands them over."""


def _to_bytes(rgb: torch.Tensor) -> np.ndarray:
    """H×W×3 values in −1…1 (a torch tensor on any device) as H×W×3 uint8: ``(x + 1) / 2`` clamped, × 255, rounded
    (computed on the tensor's device; only the bytes come to the CPU)."""
    import torch

    return ((rgb.float() + 1) * 127.5).clamp(0, 255).round().to("cpu", dtype=torch.uint8).numpy()


class Previewer(ABC):
    """Turns a step's latents into a small picture (:meth:`__call__`); made once per engine, used on its thread."""

    name: str
    """What the log calls it (``"linear"``, ``"taesd madebyollin/taesd"``)."""

    @abstractmethod
    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        """The picture of ``latents`` (N×C×h×w, any device and float dtype; the first is decoded) as H×W×3 uint8."""


class LinearPreviewer(Previewer):
    """:class:`LatentSpace`'s linear map, at the latents' resolution (h×w×3 for h×w latents)."""

    def __init__(self, space: LatentSpace) -> None:
        self.name = LINEAR
        self.space = space

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        """The map of ``latents``' first picture.

        Raises:
            ValueError: the latents have another number of channels than the map has rows (a model of this
                architecture with another autoencoder).
        """
        import torch

        if latents.shape[1] != len(self.space.factors):
            raise ValueError(f"the linear map takes {len(self.space.factors)} latent channels, these have "
                             f"{latents.shape[1]}")
        factors = torch.tensor(self.space.factors, dtype=torch.float32, device=latents.device)
        bias = torch.tensor(self.space.bias, dtype=torch.float32, device=latents.device)
        return _to_bytes(latents[0].float().movedim(0, -1) @ factors + bias)


class TinyAutoencoderPreviewer(Previewer):
    """An ``AutoencoderTiny``'s decoder (``decode(latents).sample``, in −1…1), at the model's resolution; the module
    follows the latents to their device and dtype (a model with CPU offload runs its steps on the GPU)."""

    def __init__(self, autoencoder: Any, name: str) -> None:
        self.autoencoder = autoencoder
        self.name = f"{TAESD} {name}"

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        import torch

        parameter = next(self.autoencoder.parameters())
        if (parameter.device, parameter.dtype) != (latents.device, latents.dtype):
            self.autoencoder.to(latents.device, latents.dtype)
        with torch.inference_mode():
            decoded = self.autoencoder.decode(latents[:1]).sample[0]
        return _to_bytes(decoded.movedim(0, -1))


def _tiny_autoencoder(source: str) -> Any:
    """``AutoencoderTiny.from_pretrained(source)`` (a local folder), in inference mode.

    Raises:
        Exception: whatever diffusers raises for files that are not an ``AutoencoderTiny``.
    """
    from diffusers import AutoencoderTiny

    autoencoder = AutoencoderTiny.from_pretrained(source)
    autoencoder.eval()
    autoencoder.requires_grad_(False)
    return autoencoder


def load_previewer(setting: str, architecture: str, progress: LoadProgress) -> Previewer | None:
    """The preview decoder of a model whose ``previews`` key is ``setting`` (see the module docstring), for latents
    of ``architecture``; None when it sends no previews (``"off"``, or an architecture without a
    :class:`LatentSpace` and no autoencoder named).

    ``"taesd"`` and a named hub id are fetched as the model's own files are (:func:`daemon.engines.loading.fetch`:
    downloaded with ``progress`` when missing, unless offline); ``"auto"`` reads only the cache. Any failure to get
    or load the autoencoder is logged and gives the linear map (or None without one).
    """
    space = LATENT_SPACES.get(architecture)
    if setting == OFF:
        return None
    linear = LinearPreviewer(space) if space is not None else None
    if setting == LINEAR:
        return linear
    source = setting if setting not in (AUTO, TAESD) else space.tiny_autoencoder if space is not None else ""
    if not source:  # the family's TAESD asked for, and none known for these latents
        if setting == TAESD:
            log.warning("previews = \"taesd\": there is no tiny autoencoder for %s latents; %s", architecture,
                        "the linear map" if linear is not None else "no previews")
        return linear
    try:
        if setting == AUTO:
            folder = cached_folder(source, TINY_AUTOENCODER_CONFIG)
            if folder is None:
                return linear
            path = str(folder)
        else:
            path, _ = fetch(source, "", progress, pipeline=False)
        return TinyAutoencoderPreviewer(_tiny_autoencoder(path), source)
    except Exception as error:  # EngineLoadError, diffusers' errors: previews are never worth a failed load
        log.warning("previews: cannot load the tiny autoencoder %s (%s); using %s", source, error,
                    "the linear approximation" if linear is not None else "none")
        return linear
