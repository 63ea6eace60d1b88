"""The licences of the models the daemon serves: :func:`licence_of`, for :attr:`protocol.EngineInfo.licence` and
:attr:`protocol.EngineInfo.non_commercial`, which the dialog and ``gimp-inpaint status`` show.

A model the table knows gets the licence of its model card on the Hugging Face Hub (the card's ``license`` field
and its licence file, read 2026-12); any other model gets what its ``daemon.toml`` entry declares (``licence``,
``non_commercial``), else nothing: the daemon does not guess a licence. Pure data, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Licence:
    """A model's licence: its ``name`` as the model card gives it, and whether it forbids commercial use of the
    model or its outputs (``non_commercial``)."""

    name: str
    non_commercial: bool = False


OPENRAIL_M = Licence("CreativeML OpenRAIL-M")
OPENRAIL_PLUS_M = Licence("CreativeML Open RAIL++-M")
APACHE_2 = Licence("Apache 2.0")
STABILITY_COMMUNITY = Licence("Stability AI Community License (commercial use free below USD 1M annual revenue)")
FLUX_DEV = Licence("FLUX.1 [dev] Non-Commercial License", non_commercial=True)
FLUX2_NON_COMMERCIAL = Licence("FLUX Non-Commercial License", non_commercial=True)

KNOWN_LICENCES: Mapping[str, Licence] = {
    "stable-diffusion-v1-5/stable-diffusion-inpainting": OPENRAIL_M,
    "stable-diffusion-v1-5/stable-diffusion-v1-5": OPENRAIL_M,
    "runwayml/stable-diffusion-inpainting": OPENRAIL_M,
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": OPENRAIL_PLUS_M,
    "stabilityai/stable-diffusion-xl-base-1.0": OPENRAIL_PLUS_M,
    "stabilityai/stable-diffusion-xl-refiner-1.0": OPENRAIL_PLUS_M,
    "kandinsky-community/kandinsky-2-2-decoder-inpaint": APACHE_2,
    "stabilityai/stable-diffusion-3.5-medium": STABILITY_COMMUNITY,
    "stabilityai/stable-diffusion-3.5-large": STABILITY_COMMUNITY,
    "stabilityai/stable-diffusion-3-medium-diffusers": STABILITY_COMMUNITY,
    "black-forest-labs/FLUX.1-Fill-dev": FLUX_DEV,
    "black-forest-labs/FLUX.1-Kontext-dev": FLUX_DEV,
    "black-forest-labs/FLUX.2-klein-4B": APACHE_2,
    "black-forest-labs/FLUX.2-klein-9B": FLUX2_NON_COMMERCIAL,
    "Tongyi-MAI/Z-Image-Turbo": APACHE_2,
    "Qwen/Qwen-Image": APACHE_2,
    "lodestones/Chroma1-HD": APACHE_2,
}
"""Licences of the hub models that the README, ``daemon.toml``'s examples and the families' defaults name, by hub
id (SD 3.5's community licence allows commercial use below its revenue bound, so it is not flagged)."""

OPENCV_LICENCE = Licence("Apache 2.0 (OpenCV 4.5 and later)")
"""OpenCV's Telea engine: the code is the model."""


def licence_of(model: str, declared: str = "", non_commercial: bool = False) -> Licence | None:
    """The licence of ``model`` (a hub id or a path): the one declared in its ``daemon.toml`` entry (``declared``,
    with ``non_commercial``) when given, else :data:`KNOWN_LICENCES`' entry, else None (not known)."""
    if declared:
        return Licence(declared, non_commercial)
    return KNOWN_LICENCES.get(model)
