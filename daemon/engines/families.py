"""The model families the daemon runs: :data:`FAMILY_STRATEGIES`, and telling which one a model is.

Each family is a :class:`daemon.engines.family.FamilyStrategy` in a module of its own; this table names them all,
and the functions below read a model's family from what the strategies declare (their pipeline class,
``model_index.json`` classes, UNet channels, single-file model types): from a loaded pipeline
(:func:`family_of_pipeline`), from a folder before loading (:func:`family_from_index`), from a single file's header
(:func:`family_of_single_file`), and checked against the declared one (:func:`resolve_family`). A new family is a
new module and one entry here (``docs/architecture.md``, "How to add a model family").

Importing this module is cheap: diffusers and safetensors are imported inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gimp_inpaint.protocol import Family

from .base import EngineLoadError
from .controlnet import SD_CONTROLNET_INPAINT
from .family import FamilyStrategy
from .flux import CHROMA_INPAINT, FLUX_FILL, FLUX_KONTEXT_INPAINT
from .flux2_klein import FLUX2_KLEIN_INPAINT
from .kandinsky import KANDINSKY22_INPAINT
from .qwen_image import QWEN_IMAGE_INPAINT
from .sd import SD, SD_INPAINT
from .sd3 import SD3_INPAINT
from .sdxl import SDXL, SDXL_INPAINT
from .z_image import Z_IMAGE_INPAINT

FAMILY_STRATEGIES: Mapping[Family, FamilyStrategy] = {strategy.family: strategy for strategy in (
    SD_INPAINT,
    SD,
    SDXL_INPAINT,
    SDXL,
    KANDINSKY22_INPAINT,
    SD_CONTROLNET_INPAINT,
    SD3_INPAINT,
    FLUX_FILL,
    FLUX_KONTEXT_INPAINT,
    CHROMA_INPAINT,
    FLUX2_KLEIN_INPAINT,
    Z_IMAGE_INPAINT,
    QWEN_IMAGE_INPAINT,
)}
"""The strategy of every :class:`protocol.Family`, in the order detection tries them."""


def _unet_channels(pipeline: Any) -> int:
    """``unet.config.in_channels`` of a loaded pipeline (4 when it has none)."""
    return int(getattr(getattr(getattr(pipeline, "unet", None), "config", None), "in_channels", 4))


def _detected(class_name: str, in_channels: int) -> FamilyStrategy | None:
    """The first family of :data:`FAMILY_STRATEGIES` that :meth:`~FamilyStrategy.detects` a pipeline of class
    ``class_name`` whose UNet takes ``in_channels`` channels, or None."""
    return next((s for s in FAMILY_STRATEGIES.values() if s.detects(class_name, in_channels)), None)


def family_of_pipeline(pipeline: Any) -> FamilyStrategy:
    """The family of a pipeline ``AutoPipelineForInpainting`` (or ``from_single_file``) loaded: its class and
    ``unet.config.in_channels`` (:meth:`daemon.engines.family.FamilyStrategy.detects`).

    Raises:
        EngineLoadError: a pipeline of none of the families (e.g. Kandinsky 2.1, a plain FLUX.1 [dev] text-to-image
            model).
    """
    name = type(pipeline).__name__
    found = _detected(name, _unet_channels(pipeline))
    if found is None:
        detectable = [str(s.family) for s in FAMILY_STRATEGIES.values() if not s.derived]
        raise EngineLoadError(f"the model loads as a {name}, which is none of the supported families "
                              f"({', '.join(detectable)})")
    return found


def model_index(folder: Path) -> dict[str, Any]:
    """The ``model_index.json`` of the diffusers pipeline folder ``folder`` (its class, components and the
    pipeline's own config, e.g. FLUX.2 klein's ``is_distilled``); ``{}`` when it is missing or unreadable."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def family_from_index(folder: Path) -> Family | None:
    """The family of the diffusers pipeline folder ``folder``, read from its ``model_index.json`` class and its
    ``unet/config.json`` ``in_channels`` (two small JSON files: no torch, no weights), as :func:`family_of_pipeline`
    would find it after loading. None when the files are missing, unreadable or of no supported family.
    """
    try:
        class_name = model_index(folder).get("_class_name", "")
        unet = folder / "unet" / "config.json"
        in_channels = json.loads(unet.read_text(encoding="utf-8")).get("in_channels", 4) if unet.is_file() else 4
    except (OSError, ValueError, AttributeError):
        return None
    found = _detected(class_name, in_channels) if isinstance(class_name, str) else None
    return found.family if found is not None else None


def resolve_family(declared: Family | None, pipeline: Any) -> FamilyStrategy:
    """The family a loaded base ``pipeline`` runs as, given the ``declared`` one (None: auto), for this model
    (:meth:`~FamilyStrategy.for_model` of the pipeline's config).

    The pipeline's class and UNet decide (:func:`family_of_pipeline`): ``sd`` declared for a 9-channel
    checkpoint runs as ``sd-inpaint`` (the UNet decides how the refining pass runs). A derived family
    (``sd-controlnet-inpaint``) stays itself when the base is of its :attr:`~FamilyStrategy.loads_as` family's
    architecture.

    Raises:
        EngineLoadError: the model is of another architecture than declared (an SDXL model declared ``sd``, a
            ControlNet on an SDXL or Kandinsky model, ...).
    """
    return resolve_declared(declared, family_of_pipeline(pipeline), type(pipeline).__name__).for_model(pipeline.config)


def resolve_declared(declared: Family | None, found: FamilyStrategy, class_name: str) -> FamilyStrategy:
    """The family a model of family ``found`` (its pipeline class ``class_name``, loaded or named by
    ``model_index.json``) runs as, given the ``declared`` one (None: auto); :func:`resolve_family`'s rule.

    Raises:
        EngineLoadError: ``found`` is of another architecture than ``declared``.
    """
    if declared is None:
        return found
    wanted = FAMILY_STRATEGIES[declared]
    loads_as = FAMILY_STRATEGIES[wanted.loads_as] if wanted.loads_as is not None else wanted
    if found.architecture != loads_as.architecture:
        advice = (f"; the {wanted.family} pipeline ({wanted.pipeline_class}) is for {loads_as.label} models"
                  if wanted.derived else ": fix family in daemon.toml or leave it out (auto)")
        raise EngineLoadError(f"the model is a {class_name} ({found.family}), not of family "
                              f"{str(declared)!r}{advice}")
    return wanted if wanted.derived else found


class _Shape:
    """A tensor stand-in that has only the ``shape`` of a safetensors slice (no data read)."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = tuple(shape)


class _HeaderView(Mapping[str, _Shape]):
    """A safetensors file as the key → tensor mapping diffusers' model-type detection reads, from its header
    only (``safe_open`` keys and ``get_slice(key).get_shape()``)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._keys = set(handle.keys())

    def __getitem__(self, key: str) -> _Shape:
        if key not in self._keys:
            raise KeyError(key)
        return _Shape(self._handle.get_slice(key).get_shape())

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


def family_of_single_file(path: Path) -> FamilyStrategy:
    """The family of an original-format ``.safetensors`` checkpoint, read from its header (no weights loaded):
    SD vs SDXL and 4 vs 9 UNet input channels, by diffusers' own ``infer_diffusers_model_type``, matched against
    the families' :attr:`~FamilyStrategy.single_file_types`.

    Raises:
        EngineLoadError: not a safetensors file (``.ckpt`` needs an explicit family), unreadable, or a model
            type of no supported family.
    """
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES, infer_diffusers_model_type
    from safetensors import safe_open

    if path.suffix.lower() != ".safetensors":
        raise EngineLoadError(f"{path}: the family of a {path.suffix} file cannot be read from a header; "
                              "set family = \"sd-inpaint\", \"sd\", \"sdxl-inpaint\" or \"sdxl\"")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = _HeaderView(handle)
            # the UNet's first convolution: without it diffusers' detection falls back to "v1" for any file
            model_type = infer_diffusers_model_type(header) if CHECKPOINT_KEY_NAMES["inpainting"] in header else None
    except Exception as error:  # unreadable header, truncated file, ...
        raise EngineLoadError(f"cannot read the checkpoint {path}: {error}") from error
    found = next((s for s in FAMILY_STRATEGIES.values() if model_type in s.single_file_types), None)
    if found is None:
        kind = f"a {model_type!r} checkpoint" if model_type else "not an original-format (LDM) UNet checkpoint"
        raise EngineLoadError(f"{path} is {kind}, none of the supported families (SD 1.x/2.x or SDXL, inpainting "
                              "or not)")
    return found
