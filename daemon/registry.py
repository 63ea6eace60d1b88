"""The model registry: what the user declared in ``daemon.toml`` (models, LoRAs, textual-inversion embeddings).

Pure data and validation, no torch: the daemon reads it at start, lists the models in the handshake and hands
each :class:`ModelSpec` to a :class:`daemon.engines.diffusers_engine.DiffusersEngine`::

    [models.sd15-inpaint]
    model = "stable-diffusion-v1-5/stable-diffusion-inpainting"   # hub id, diffusers folder or .safetensors file
    family = "sd-inpaint"        # optional for hub ids and folders ("auto": read from the model)
    dtype = "auto"               # auto | float16 | bfloat16 | float32
    variant = "fp16"             # optional: diffusers weight variant to download (hub repos that have one)

    [models.sd15-controlnet]
    model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    family = "sd-controlnet-inpaint"
    controlnet = "lllyasviel/control_v11p_sd15_inpaint"

    [models.sdxl-inpaint]
    model = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    refiner = "stabilityai/stable-diffusion-xl-refiner-1.0"      # optional second expert (SDXL families)
    compile = true               # torch.compile the UNet (CUDA; first run is slow)
    previews = "taesd"           # auto | taesd | linear | off | an AutoencoderTiny's hub id or folder

    [models.flux-fill]
    model = "black-forest-labs/FLUX.1-Fill-dev"
    quantization = "gguf"        # auto | none | nf4 | int8 | fp8 | gguf (daemon.quantization)
    gguf = "~/models/flux1-fill-dev-Q4_K_S.gguf"                 # the GGUF transformer (quantization = "gguf")

    [loras.pixel-art]
    path = "~/loras/pixel-art.safetensors"
    base = "sd"                  # sd (SD 1.x/2.x) | sdxl

    [embeddings.bad-hands]
    path = "~/embeddings/bad-hands.safetensors"
    token = "<bad-hands>"        # used when it appears in a prompt
    base = "sd"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gimp_inpaint.protocol import Family
from gimp_inpaint.protocol.options import MAX_ENGINE_NAME_CHARS

AUTO = "auto"
"""The ``family`` value of ``daemon.toml`` (and the default) that leaves the family to the model: read from its
folder, from the pipeline ``AutoPipelineForInpainting`` loads, or from a single file's header. Config-only: a
:class:`ModelSpec` holds None for it."""

FAMILIES = (AUTO, *(family.value for family in Family))
"""The values ``family`` may take in ``daemon.toml``: :data:`AUTO` or a :class:`protocol.Family` (how each runs:
:data:`daemon.engines.families.FAMILY_STRATEGIES`)."""

BASES = ("sd", "sdxl", "sd3", "flux", "chroma", "flux2-klein", "z-image", "qwen-image")
"""Base architectures a LoRA or an embedding is made for: ``sd`` (SD 1.x/2.x UNet and CLIP text encoder), ``sdxl``,
``sd3`` (SD 3/3.5 transformers), ``flux`` (FLUX.1 transformers: Fill and Kontext take FLUX.1 LoRAs), ``chroma``,
``flux2-klein``, ``z-image`` and ``qwen-image``. Embeddings exist for ``sd`` and ``sdxl`` only."""

DTYPES = ("auto", "float16", "bfloat16", "float32")
"""Weight dtypes: ``auto`` is float16 on CUDA (bfloat16 for the transformer families) and float32 on CPU and MPS (see
:func:`daemon.device.torch_dtype_for`);
``bfloat16`` is there for GPUs and models where float16 overflows (it has float32's range)."""

QUANTIZATIONS = ("auto", "none", "nf4", "int8", "fp8", "gguf")
"""How a model's weights are held (:mod:`daemon.quantization`): ``auto`` (the default) chooses by the memory budget
(:func:`daemon.quantization.choose_quantization`); ``none`` loads them at :attr:`ModelSpec.dtype`; ``nf4``
(bitsandbytes 4-bit NormalFloat), ``int8`` and ``fp8`` (torchao weight-only) quantize the denoiser and the text
encoders as they load; ``gguf`` takes the denoiser from :attr:`ModelSpec.gguf`, a GGUF file."""

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
"""A model path ending in one of these is a single-file checkpoint loaded with ``from_single_file``."""


class RegistryError(ValueError):
    """A ``[models.*]``, ``[loras.*]`` or ``[embeddings.*]`` table is unusable; the message names it and the key."""


@dataclass(frozen=True)
class ModelSpec:
    """One ``[models.NAME]`` entry: a model the daemon offers as an engine named ``name``.

    Attributes:
        name: the engine name (alias) in the handshake and in requests.
        model: a Hugging Face Hub id, a local diffusers folder, or a single-file checkpoint
            (:data:`SINGLE_FILE_SUFFIXES`).
        family: the declared :class:`protocol.Family`, or None for :data:`AUTO` (read from the model); the
            config's strings (``"sd"``, ``"auto"``) are accepted and converted.
        dtype: one of :data:`DTYPES`.
        variant: diffusers weight variant (``"fp16"``) or empty for the default weights.
        controlnet: hub id or folder of a ControlNet (``sd-controlnet-inpaint`` only, required there).
        refiner: hub id or folder of an SDXL refiner (SDXL families only), shared with the base through its
            VAE and second text encoder.
        config: for a single-file checkpoint, the hub id or folder of the diffusers config to build it with
            (``from_single_file(config=...)``); empty lets diffusers infer it (needs the Hub once).
        compile: ``torch.compile`` the UNet (CUDA only; the first request compiles, minutes).
        previews: how a job's previews are decoded from its latents (:mod:`daemon.engines.previews`): ``auto`` (the
            family's tiny autoencoder when it is in the Hugging Face cache, else a linear map; never downloads),
            ``taesd`` (that autoencoder, downloaded with the model when missing), ``linear``, ``off``, or the hub id
            or folder of another ``AutoencoderTiny``.
        licence: the model's licence, for a model :data:`daemon.licences.KNOWN_LICENCES` does not know (shown in the
            dialog and ``status``); empty: the table's, or none known.
        non_commercial: that licence forbids commercial use (the dialog and ``status`` warn); only with ``licence``.
        quantization: one of :data:`QUANTIZATIONS` (diffusers folders and hub ids; a single file takes ``auto`` or
            ``none``).
        gguf: with ``quantization = "gguf"`` (and only then), the GGUF file of the denoiser: a local path, a
            ``https://huggingface.co/...`` address or ``OWNER/REPO/FILE.gguf`` on the Hub.
    """

    name: str
    model: str
    family: Family | None = None
    dtype: str = "auto"
    variant: str = ""
    controlnet: str = ""
    refiner: str = ""
    config: str = ""
    compile: bool = False
    previews: str = "auto"
    licence: str = ""
    non_commercial: bool = False
    quantization: str = "auto"
    gguf: str = ""

    def __post_init__(self) -> None:
        family: Family | str | None = self.family
        object.__setattr__(self, "family", None if family in (None, AUTO) else Family(family))

    @property
    def single_file(self) -> bool:
        """True when :attr:`model` is a single-file checkpoint (``from_single_file``)."""
        return self.model.lower().endswith(SINGLE_FILE_SUFFIXES)


@dataclass(frozen=True)
class LoraSpec:
    """One ``[loras.NAME]`` entry: a LoRA file (diffusers or kohya ``.safetensors``) for models of ``base``."""

    name: str
    path: Path
    base: str


@dataclass(frozen=True)
class EmbeddingSpec:
    """One ``[embeddings.NAME]`` entry: a textual-inversion file whose ``token`` a prompt may use (``base`` models)."""

    name: str
    path: Path
    token: str
    base: str


@dataclass(frozen=True)
class Registry:
    """Everything ``daemon.toml`` declares about models, in file order."""

    models: tuple[ModelSpec, ...] = ()
    loras: tuple[LoraSpec, ...] = ()
    embeddings: tuple[EmbeddingSpec, ...] = ()

    def loras_for(self, base: str | None) -> list[LoraSpec]:
        """The LoRAs made for models of ``base`` (:data:`BASES`; a family's is
        :attr:`daemon.engines.family.FamilyStrategy.base`); none for None (a family that takes none, or not known
        yet)."""
        return [lora for lora in self.loras if base is not None and lora.base == base]

    def embeddings_for(self, base: str | None) -> list[EmbeddingSpec]:
        """The embeddings made for models of ``base``, as :meth:`loras_for`."""
        return [embedding for embedding in self.embeddings if base is not None and embedding.base == base]


_MODEL_KEYS: dict[str, type] = {"model": str, "family": str, "dtype": str, "variant": str, "controlnet": str,
                                "refiner": str, "config": str, "compile": bool, "previews": str,
                                "licence": str, "non_commercial": bool, "quantization": str, "gguf": str}
"""Keys of a ``[models.NAME]`` table and their TOML types (``model`` is required)."""

_LORA_KEYS: dict[str, type] = {"path": str, "base": str}
_EMBEDDING_KEYS: dict[str, type] = {"path": str, "token": str, "base": str}


def _table(source: str, kind: str, name: str, table: Any, keys: Mapping[str, type],
           required: tuple[str, ...]) -> dict[str, Any]:
    """``table`` checked against ``keys`` (types) and ``required``; raises :class:`RegistryError` naming the table."""
    where = f"{source}: [{kind}.{name}]"
    if not isinstance(table, dict):
        raise RegistryError(f"{where} must be a table")
    if not 1 <= len(name) <= MAX_ENGINE_NAME_CHARS or name == "opencv":
        raise RegistryError(f"{where}: names must have 1…{MAX_ENGINE_NAME_CHARS} characters and not be 'opencv'")
    unknown = set(table) - set(keys)
    if unknown:
        raise RegistryError(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(keys)})")
    for key in required:
        if not table.get(key):
            raise RegistryError(f"{where}: {key} = \"...\" is required")
    for key, value in table.items():
        if type(value) is not keys[key]:
            raise RegistryError(f"{where}: {key} must be a {keys[key].__name__}")
    return table


def _choice(source: str, where: str, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RegistryError(f"{source}: [{where}] {key} = {value!r} is not one of {', '.join(allowed)}")


def model_spec(source: str, name: str, table: Any) -> ModelSpec:
    """One ``[models.NAME]`` table as a validated :class:`ModelSpec`.

    Raises:
        RegistryError: unknown keys, wrong types, a missing ``model``, an unknown family or dtype, a ControlNet
            outside ``sd-controlnet-inpaint`` (or that family without one), a refiner outside the SDXL families,
            an unknown quantization, ``quantization = "gguf"`` without a ``gguf`` file (or a file without it, or one
            not ending in ``.gguf``), a quantization of a single-file checkpoint.
    """
    values = _table(source, "models", name, table, _MODEL_KEYS, ("model",))
    where = f"models.{name}"
    _choice(source, where, "family", values.get("family", AUTO), FAMILIES)
    spec = ModelSpec(name=name, **values)
    _choice(source, where, "dtype", spec.dtype, DTYPES)
    if (spec.family is Family.SD_CONTROLNET_INPAINT) != bool(spec.controlnet):
        raise RegistryError(f"{source}: [{where}] a controlnet goes with family = \"sd-controlnet-inpaint\" (SD 1.5 "
                            "ControlNet inpainting) and that family needs one; diffusers has no inpainting ControlNet "
                            "pipeline for the other families")
    if spec.refiner and spec.family not in (Family.SDXL_INPAINT, Family.SDXL, None):
        raise RegistryError(f"{source}: [{where}] refiner is for SDXL models (family sdxl-inpaint or sdxl)")
    if spec.config and not spec.single_file:
        raise RegistryError(f"{source}: [{where}] config is only for single-file checkpoints (.safetensors, .ckpt)")
    if spec.non_commercial and not spec.licence:
        raise RegistryError(f"{source}: [{where}] non_commercial goes with licence: name the model's licence")
    _quantization(source, where, spec)
    if not spec.previews:
        raise RegistryError(f"{source}: [{where}] previews must be auto, taesd, linear, off or the hub id or folder of "
                            "an AutoencoderTiny")
    return spec


def _quantization(source: str, where: str, spec: ModelSpec) -> None:
    """Check :attr:`ModelSpec.quantization` and :attr:`ModelSpec.gguf` together (see :func:`model_spec`)."""
    _choice(source, where, "quantization", spec.quantization, QUANTIZATIONS)
    if spec.quantization == "gguf" and not spec.gguf:
        raise RegistryError(f"{source}: [{where}] quantization = \"gguf\" needs the GGUF file of the model's "
                            "transformer: gguf = \"PATH.gguf\" (or a Hugging Face address of one)")
    if spec.gguf and spec.quantization != "gguf":
        raise RegistryError(f"{source}: [{where}] a gguf file goes with quantization = \"gguf\" (it is "
                            f"{spec.quantization!r}): add that line, or drop gguf")
    if spec.gguf and not spec.gguf.lower().endswith(".gguf"):
        raise RegistryError(f"{source}: [{where}] gguf = {spec.gguf!r} must name a .gguf file")
    if spec.single_file and spec.quantization not in ("auto", "none"):
        raise RegistryError(f"{source}: [{where}] quantization = {spec.quantization!r} is for diffusers folders and "
                            "hub ids; a single-file checkpoint takes auto or none")


def parse_registry(source: str, models: Any = None, loras: Any = None, embeddings: Any = None) -> Registry:
    """The ``models``, ``loras`` and ``embeddings`` tables of ``daemon.toml`` (``source``: its path, for messages).

    Paths of LoRAs and embeddings may start with ``~``; they are checked when used, not here (a file on a drive
    that is not mounted yet must not stop the daemon).

    Raises:
        RegistryError: any table that :func:`model_spec` refuses, unknown keys, missing ``path``/``token``, a base
            outside :data:`BASES`, or two embeddings with one token.
    """
    specs = []
    for kind, tables in (("models", models), ("loras", loras), ("embeddings", embeddings)):
        if tables is not None and not isinstance(tables, dict):
            raise RegistryError(f"{source}: '{kind}' must be a table of [{kind}.NAME] tables")
        specs.append((tables or {}).items())
    model_tables, lora_tables, embedding_tables = specs
    parsed_loras = []
    for name, table in lora_tables:
        values = _table(source, "loras", name, table, _LORA_KEYS, ("path", "base"))
        _choice(source, f"loras.{name}", "base", values["base"], BASES)
        parsed_loras.append(LoraSpec(name, Path(values["path"]).expanduser(), values["base"]))
    parsed_embeddings = []
    for name, table in embedding_tables:
        values = _table(source, "embeddings", name, table, _EMBEDDING_KEYS, ("path", "token", "base"))
        _choice(source, f"embeddings.{name}", "base", values["base"], BASES)
        parsed_embeddings.append(EmbeddingSpec(name, Path(values["path"]).expanduser(), values["token"],
                                               values["base"]))
    tokens = [(embedding.base, embedding.token) for embedding in parsed_embeddings]
    if len(set(tokens)) != len(tokens):
        raise RegistryError(f"{source}: two [embeddings.*] of one base use the same token")
    return Registry(models=tuple(model_spec(source, name, table) for name, table in model_tables),
                    loras=tuple(parsed_loras), embeddings=tuple(parsed_embeddings))
