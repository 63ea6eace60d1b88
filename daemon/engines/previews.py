"""Previews of a diffusion job's picture as it forms: the latents of a denoising step decoded cheaply to RGB.

Two decoders, both far cheaper than the model's own autoencoder, for the latent spaces of
:data:`LATENT_SPACES` (keyed by :attr:`daemon.engines.family.FamilyStrategy.architecture`):

- :class:`TinyAutoencoderPreviewer`: diffusers' ``AutoencoderTiny``, the tiny distilled autoencoders TAESD
  (Ollin Boer Bohan, ``madebyollin/taesd`` for SD 1.x/2.x, ``madebyollin/taesdxl`` for SDXL; about 10 MB each),
  which decode the latents the pipeline denoises as they are (diffusers' AutoencoderTiny documentation: its
  ``scaling_factor`` is 1.0, so it takes the scaled latents that the UNet sees), to pixels at the model's size;
- :class:`LinearPreviewer`: each latent pixel's four channels mapped to RGB by a fixed 4×3 matrix and a bias, at the
  latents' resolution (an eighth of the model's size), the "latent to RGB" preview of ComfyUI
  (``latent_preview.py``'s ``Latent2RGBPreviewer``: ``linear(latents, factors)`` then ``(x + 1) / 2``, clamped).

Which one a model uses is its ``previews`` key in ``daemon.toml`` (:attr:`daemon.registry.ModelSpec.previews`,
:func:`load_previewer`): ``"auto"`` (the default: the family's TAESD when it is already in the Hugging Face cache,
read without the network, else the linear map), ``"taesd"`` (the family's TAESD, downloaded like the model on its
first load when it is not cached), ``"linear"``, ``"off"`` (no previews), or the hub id or folder of another
``AutoencoderTiny`` for the model's latents. A preview decoder that cannot be had falls back to the linear map with
a log line: previews never make a fill fail. Kandinsky 2.2's MoVQ latents have neither a tiny autoencoder nor
published linear factors, so its jobs send no previews.

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
        factors: the linear map's 4 rows (one per latent channel) of R, G, B weights.
        bias: added to R, G, B after the map.
        tiny_autoencoder: the hub id of its TAESD (diffusers ``AutoencoderTiny`` format).
    """

    factors: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float]
    tiny_autoencoder: str


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
}
"""Preview decoding of each :attr:`daemon.engines.family.FamilyStrategy.architecture` that has one (``"sd"``,
``"sdxl"``; not ``"kandinsky22"``). The factors apply to the latents as the UNet sees them (scaled by the VAE's
``scaling_factor``), as ComfyUI applies them to its sampler's."""


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
        """The picture of ``latents`` (N×4×h×w, any device and float dtype; the first is decoded) as H×W×3 uint8."""


class LinearPreviewer(Previewer):
    """:class:`LatentSpace`'s linear map, at the latents' resolution (h×w×3 for h×w latents)."""

    def __init__(self, space: LatentSpace) -> None:
        self.name = LINEAR
        self.space = space

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        import torch

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
    if setting in (AUTO, TAESD) and space is None:
        if setting == TAESD:
            log.warning("previews = \"taesd\": there is no tiny autoencoder for %s latents; no previews",
                        architecture)
        return None
    source = space.tiny_autoencoder if setting in (AUTO, TAESD) and space is not None else setting
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
