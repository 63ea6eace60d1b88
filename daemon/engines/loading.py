"""Getting weights onto the device: downloads with byte progress, quantization, and placement within the pool's budget.

Downloads go through huggingface_hub's public API only: ``snapshot_download`` with a ``tqdm_class``
(:func:`byte_progress_class`) whose byte bar becomes the engine's ``("download", bytes, total)`` progress.
Quantization (:func:`plan_quantization`, :func:`quantization_kwargs`) is chosen by :mod:`daemon.quantization` and
applied through diffusers' own loaders (``PipelineQuantizationConfig``, ``from_single_file`` of a GGUF file).
Importing this module is cheap: huggingface_hub, diffusers and torch are imported inside the functions.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..pool import ModelPool, component_bytes
from ..quantization import DENOISERS, Capabilities, QuantizationChoice, choose_quantization, model_sizes, refusal
from .base import EngineLoadError, LoadProgress

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SNAPSHOT_BYTES_BAR = "huggingface_hub.snapshot_download"
"""The ``name`` huggingface_hub (2.x, ``_snapshot_download.py``) gives the progress bar that ``snapshot_download``
creates with its ``tqdm_class`` and feeds with the bytes every file download writes to disk (its ``total`` grows
by each file's size as the file's download starts). The other bars it makes with that class count files
(``Fetching N files``) or network bytes of Xet transfers (``…snapshot_download.transfer``)."""


def byte_progress_class(progress: LoadProgress) -> type:
    """A ``tqdm_class`` for ``huggingface_hub.snapshot_download`` that reports its byte bar as
    ``progress("download", bytes done, bytes total)`` and draws nothing.

    It subclasses huggingface_hub's ``tqdm``, so ``snapshot_download`` hands it the bar's ``name``
    (:data:`SNAPSHOT_BYTES_BAR`); bars of other names are silent. Thread-safe: the files download in parallel.
    """
    from huggingface_hub.utils import tqdm as hf_tqdm

    class ByteProgress(hf_tqdm):
        _lock_counts = threading.Lock()

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._reports = kwargs.get("name") == SNAPSHOT_BYTES_BAR
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            with self._lock_counts:  # a disabled tqdm counts nothing itself
                self.n += n or 0
                done, total = int(self.n), int(self.total or 0)
            if self._reports:
                progress("download", min(done, total), total)
            return None

    return ByteProgress


INDEX_FILE = "model_index.json"
"""The file of a diffusers pipeline repo that names its class and components (diffusers'
``DiffusionPipeline.config_name``)."""


def pipeline_patterns(index: Mapping[str, Any], filenames: Iterable[str],
                      variant: str | None) -> tuple[list[str], list[str]]:
    """``(allow_patterns, ignore_patterns)`` of ``snapshot_download`` for a pipeline repo: the files
    ``DiffusionPipeline.download`` (diffusers 0.42, ``pipelines/pipeline_utils.py``) asks for, computed with its
    helpers (``filter_model_files``, ``is_safetensors_compatible``, ``variant_compatible_siblings``).

    That is: the safetensors weights of ``variant`` (else the default ones; ``.bin`` only where a component has no
    safetensors), every file of the non-weight folders (tokenizers, schedulers), the weight folders' ``config.json``,
    the top-level configs and transformers' auxiliary files, ``README.md`` for pipelines with connected pipelines
    (Kandinsky's combined ones); never ONNX, Flax or FlashPack weights. Custom pipeline code is not asked for (this
    daemon does not run it). ``tests/test_families.py`` checks the result against diffusers' own.

    Args:
        index: the repo's ``model_index.json``.
        filenames: every file of the repo (``model_info(...).siblings``).
        variant: diffusers weight variant (``"fp16"``) or None.

    Raises:
        ValueError: ``variant`` is asked for and the repo has no weights of it (``variant_compatible_siblings``, as
            diffusers).
    """
    import diffusers
    from diffusers.pipelines.pipeline_loading_utils import (
        CUSTOM_PIPELINE_FILE_NAME,
        filter_model_files,
        is_safetensors_compatible,
        variant_compatible_siblings,
    )
    from diffusers.schedulers.scheduling_utils import SCHEDULER_CONFIG_NAME
    from diffusers.utils import CONFIG_NAME, TRANSFORMERS_COMPONENT_AUX_FILES

    index = dict(index)
    names = set(filenames) - set(index.pop("_ignore_files", []))
    folders = [key for key, value in index.items() if isinstance(value, list) and key != "_class_name"]
    weight_folders = {os.path.split(name)[0] for name in filter_model_files(names)
                      if os.path.split(name)[0] in folders}
    if is_safetensors_compatible(names, folder_names=weight_folders, variant=variant):
        ignore = ["*.bin", "*.msgpack", "*.onnx", "*.pb"]
    else:  # diffusers' use_safetensors=None: pickled weights are allowed when safetensors are missing
        ignore = ["*.safetensors", "*.msgpack", "*.onnx", "*.pb"]
    # annotated "list | str" in diffusers 0.42, it returns the (usable, variant) file sets
    siblings: Any = variant_compatible_siblings(names, variant=variant, ignore_patterns=ignore)
    weights: set[str] = siblings[0]
    pipeline_class = getattr(diffusers, str(index.get("_class_name")), None)
    allow = [*sorted(weights),
             *(f"{folder}/*" for folder in folders if folder not in weight_folders),
             *(os.path.join(folder, "config.json") for folder in weight_folders),
             SCHEDULER_CONFIG_NAME, CONFIG_NAME, INDEX_FILE, CUSTOM_PIPELINE_FILE_NAME,
             *TRANSFORMERS_COMPONENT_AUX_FILES,
             *(["README.md"] if getattr(pipeline_class, "_load_connected_pipes", False) else [])]
    return allow, [*ignore, *(f"{pattern}.index.*json" for pattern in ignore)]


def connected_pipelines(folder: Path, index: Mapping[str, Any]) -> list[str]:
    """Hub ids of the pipelines a downloaded pipeline ``folder`` is connected to (its README's ``prior`` list:
    diffusers' ``CONNECTED_PIPES_KEYS``, for classes with ``_load_connected_pipes``, Kandinsky's combined
    pipelines); empty for the others."""
    import diffusers
    from diffusers.pipelines.pipeline_loading_utils import CONNECTED_PIPES_KEYS
    from huggingface_hub import ModelCard

    pipeline_class = getattr(diffusers, str(index.get("_class_name")), None)
    readme = folder / "README.md"
    if not getattr(pipeline_class, "_load_connected_pipes", False) or not readme.is_file():
        return []
    card = ModelCard.load(str(readme))
    return [repo for key in CONNECTED_PIPES_KEYS for repo in getattr(card.data, key, None) or []]


def prefetch_pipeline(model: str, variant: str, progress: LoadProgress) -> None:
    """Download the files of hub pipeline ``model`` that diffusers will load, with byte progress.

    1. The repo's file list (``huggingface_hub.model_info``) and its ``model_index.json`` (``hf_hub_download``;
       a small file, no progress).
    2. diffusers' file selection for them (:func:`pipeline_patterns`).
    3. ``huggingface_hub.snapshot_download`` of that selection with :func:`byte_progress_class` as ``tqdm_class``
       (what is cached already is not downloaded again).
    4. The same for each connected pipeline (:func:`connected_pipelines`).

    Raises:
        Exception: huggingface_hub's and diffusers' errors (network, authentication, no weights of ``variant``).
    """
    from huggingface_hub import hf_hub_download, model_info, snapshot_download

    filenames = [sibling.rfilename for sibling in model_info(model).siblings or []]
    index = json.loads(Path(hf_hub_download(model, INDEX_FILE)).read_text(encoding="utf-8"))
    allow, ignore = pipeline_patterns(index, filenames, variant or None)
    folder = Path(snapshot_download(model, allow_patterns=allow, ignore_patterns=ignore,
                                    tqdm_class=byte_progress_class(progress)))
    for connected in connected_pipelines(folder, index):
        prefetch_pipeline(connected, variant, progress)


def download_pipeline(model: str, variant: str, progress: LoadProgress) -> str:
    """The local folder of the hub pipeline ``model``, downloading what is missing with byte progress.

    Online, :func:`prefetch_pipeline` downloads diffusers' selection of files with byte progress. Then
    ``DiffusionPipeline.download(model, variant=...)``, diffusers' own call, has the last word: it returns the
    cached snapshot when every file it expects is there (after a prefetch, always), downloads (without progress)
    whatever the prefetch did not, and offline (``HF_HUB_OFFLINE=1``) returns the cached snapshot or raises. A failed
    prefetch is logged and left to it, so its errors and its fall-back to the cache are diffusers' own.

    Raises:
        OSError (and huggingface_hub's errors): the download failed or the model is not cached offline.
    """
    from diffusers import DiffusionPipeline
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        try:
            prefetch_pipeline(model, variant, progress)
        except Exception as error:  # network, authentication, a repo diffusers reads differently: diffusers decides
            log.info("prefetching %s with progress failed (%s); diffusers downloads it", model, error)
    return str(DiffusionPipeline.download(model, variant=variant or None))


def download_model(model: str, variant: str, progress: LoadProgress) -> str:
    """The local folder of the hub model repo ``model`` (a ControlNet: ``config.json`` and its safetensors
    weights of ``variant``), downloaded by ``huggingface_hub.snapshot_download`` with byte progress.

    Raises:
        OSError (and huggingface_hub's errors): the download failed or the model is not cached offline.
    """
    from huggingface_hub import snapshot_download

    weights = f"diffusion_pytorch_model.{variant}.safetensors" if variant else "diffusion_pytorch_model.safetensors"
    return str(snapshot_download(model, allow_patterns=["config.json", weights],
                                 tqdm_class=byte_progress_class(progress)))


def new_bytes(pipeline: Any, shared_with: Iterable[Any] = ()) -> int:
    """Bytes of ``pipeline``'s modules (:func:`daemon.pool.component_bytes`) that none of ``shared_with``
    (pipelines or modules already in the pool) holds."""
    known: set[int] = set()
    for other in shared_with:
        known.update(component_bytes(other))
    return sum(size for key, size in component_bytes(pipeline).items() if key not in known)


def place(pipeline: Any, device: torch.device, pool: ModelPool, *, size: int, keep: Iterable[str],
          compile_unet: bool, label: str, offload_as: str = "") -> bool:
    """Move ``pipeline`` (loaded on the CPU) onto ``device`` within ``pool``'s budget; True when offloaded.

    ``pool.make_room(size, keep)`` first evicts least-recently-used models. On CUDA a pipeline that does not fit
    the budget together with the kept entries already there, or one whose modules carry offload hooks already
    (a ControlNet pipeline over an offloaded base), or whose ``offload_as`` is ``"model"``, is not moved but gets
    ``enable_model_cpu_offload`` (each model moves to the GPU only while it runs) and VAE tiling (diffusers' "Reduce
    memory usage" guide); with ``offload_as = "group"`` (:class:`daemon.quantization.QuantizationChoice`) it gets
    :func:`group_offload` instead.
    ``compile_unet``: ``unet.compile()`` (in place, so shared modules keep their identity) on CUDA; refused with
    a log line elsewhere.

    Attention needs nothing here: on torch 2 diffusers' models use ``AttnProcessor2_0``
    (``torch.nn.functional.scaled_dot_product_attention``, memory-efficient/flash kernels) by default.
    """
    keep = list(keep)
    pool.make_room(size, keep=keep)
    needed = size + pool.used_bytes(keep)  # with what the engine keeps beside it (an SDXL base for its refiner)
    hooked = any(hasattr(module, "_hf_hook") for module in pipeline.components.values())  # shares offloaded ones
    offloaded = device.type == "cuda" and (needed > pool.budget_bytes or hooked or bool(offload_as))
    if offloaded and offload_as == "group":
        log.info("%s: group offload (leaf level, CUDA streams) and VAE tiling", label)
        group_offload(pipeline, device)
    elif offloaded:
        log.info("%s: %.2f GB with what it needs beside it do not fit the %.2f GB budget, or it shares offloaded "
                 "modules: model CPU offload and VAE tiling", label, needed / 1e9, pool.budget_bytes / 1e9)
        offload(pipeline, device)
    elif device.type != "cpu":  # loaded there
        pipeline.to(device)
    if device.type == "mps":
        pipeline.enable_attention_slicing()  # diffusers' MPS guide, for machines with < 64 GB of RAM
    if compile_unet:
        if device.type == "cuda" and getattr(pipeline, "unet", None) is not None:
            pipeline.unet.compile()
        else:
            log.warning("%s: compile is for CUDA devices only, not %s: running uncompiled", label, device)
    pipeline.set_progress_bar_config(disable=True)
    return offloaded


def offload(pipeline: Any, device: torch.device) -> None:
    """``enable_model_cpu_offload(device=device)`` and VAE tiling where the pipeline has a VAE."""
    pipeline.enable_model_cpu_offload(device=device)
    _tile_vae(pipeline)


def group_offload(pipeline: Any, device: torch.device) -> None:
    """``enable_group_offload`` at leaf level with CUDA streams (each layer's weights come from RAM just before it
    runs, the next one's transfer overlapping this one's compute: diffusers' "Reduce memory usage" guide, "Group
    offloading") and VAE tiling: the least GPU memory, for a model whose largest component does not fit."""
    pipeline.enable_group_offload(onload_device=device, offload_type="leaf_level", use_stream=True)
    _tile_vae(pipeline)


def _tile_vae(pipeline: Any) -> None:
    vae = getattr(pipeline, "vae", None)
    if vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()


# --- quantization (daemon.quantization decides, diffusers' loaders apply) ---

def capabilities(device: torch.device) -> Capabilities:
    """What ``device`` and this environment can quantize with: the device type, its CUDA compute capability, and
    whether bitsandbytes, torchao and gguf are installed (``importlib.util.find_spec``: nothing is imported)."""
    import torch

    def installed(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    capability = tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None
    return Capabilities(device=device.type, cuda_capability=capability,  # type: ignore[arg-type]
                        bitsandbytes=installed("bitsandbytes"), torchao=installed("torchao"), gguf=installed("gguf"))


def check_quantization(quantization: str, device: torch.device) -> None:
    """Refuse a ``quantization`` this machine cannot run before anything downloads or loads.

    Raises:
        EngineLoadError: :func:`daemon.quantization.refusal`'s message (what to install, or which GPU it needs).
    """
    why = refusal(quantization, capabilities(device))
    if why:
        raise EngineLoadError(why)


def plan_quantization(requested: str, folder: Path, variant: str, budget: Callable[[], int], device: torch.device,
                      torch_dtype: torch.dtype, label: str) -> QuantizationChoice:
    """:func:`daemon.quantization.choose_quantization` for the pipeline ``folder`` (downloaded, not loaded yet): its
    sizes from the safetensors headers (:func:`daemon.quantization.model_sizes`), the pool's budget, ``device``'s
    capabilities, ``torch_dtype``'s bytes per weight; the choice is logged. ``budget()`` is called only where the
    decision reads it (``auto`` on CUDA), so a load on the CPU leaves a pool's lazily measured budget alone."""
    weighed = requested == "auto" and device.type == "cuda"
    sizes = model_sizes(folder, variant) if requested == "auto" else None
    choice = choose_quantization(requested, sizes, budget() if weighed else 0, capabilities(device),
                                 element_bytes=torch_dtype.itemsize)
    log.info("%s: quantization %s%s: %s", label, choice.quantization,
             f", {choice.offload} offload" if choice.offload else "", choice.reason)
    return choice


def _components(folder: Path) -> tuple[str, list[str], Mapping[str, Any]]:
    """``(denoiser, text encoders, model_index.json)`` of the pipeline ``folder``: the component names.

    Raises:
        EngineLoadError: no ``model_index.json`` or no denoiser component (:data:`daemon.quantization.DENOISERS`).
    """
    try:
        index: Mapping[str, Any] = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EngineLoadError(f"quantization needs the pipeline's {INDEX_FILE} in {folder}: {error}") from error
    present = [name for name, value in index.items()
               if not name.startswith("_") and isinstance(value, list) and value[0] is not None]
    denoiser = next((name for name in DENOISERS if name in present), None)
    if denoiser is None:
        raise EngineLoadError(f"the pipeline in {folder} has none of {', '.join(DENOISERS)} to quantize")
    return denoiser, [name for name in present if name.startswith("text_encoder")], index


def gguf_file(gguf: str) -> str:
    """The local path of the GGUF file ``gguf`` names (:attr:`daemon.registry.ModelSpec.gguf`): a path as it is
    (``~`` expanded), ``https://huggingface.co/...`` left to diffusers' ``from_single_file``, ``OWNER/REPO/FILE``
    downloaded into the Hugging Face cache (``hf_hub_download``).

    Raises:
        EngineLoadError: a path that does not exist, or the download failed.
    """
    path = Path(gguf).expanduser()
    if path.is_file() or gguf.startswith("https://"):
        return str(path) if path.is_file() else gguf
    parts = gguf.split("/")
    if path.is_absolute() or gguf.startswith((".", "~")) or len(parts) < 3:
        raise EngineLoadError(f"gguf file {path} does not exist: point gguf at a .gguf file, a "
                              "https://huggingface.co/... address or OWNER/REPO/FILE.gguf on the Hub")
    from huggingface_hub import hf_hub_download

    try:
        return str(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:])))
    except Exception as error:  # HTTP errors, offline mode: cannot download
        raise EngineLoadError(f"could not download the gguf file {gguf!r}: {error}") from error


def quantization_kwargs(choice: QuantizationChoice, folder: Path, torch_dtype: torch.dtype,
                        gguf: str = "") -> dict[str, Any]:
    """The ``from_pretrained`` keyword arguments that load the pipeline ``folder`` quantized as ``choice`` says
    (empty for ``none``).

    - ``nf4``: ``quantization_config=PipelineQuantizationConfig(quant_backend="bitsandbytes_4bit", ...)`` with
      ``bnb_4bit_quant_type="nf4"`` and ``torch_dtype`` as compute dtype, for the denoiser and (when
      ``choice.text_encoders``) the text encoders (diffusers' "Quantization" guide, pipeline-level quantization).
    - ``int8``, ``fp8``: a ``quant_mapping`` of torchao's ``Int8WeightOnlyConfig`` / ``Float8WeightOnlyConfig``
      in diffusers' ``TorchAoConfig`` for the denoiser and transformers' for the text encoders (diffusers 0.42's
      ``TorchAoConfig`` takes an ``AOBaseConfig`` object, and its signature differs from transformers', so
      ``quant_backend="torchao"`` is refused: ``PipelineQuantizationConfig._validate_init_kwargs_in_backends``).
    - ``gguf``: the denoiser itself, ``<its class>.from_single_file(gguf file, config=folder, subfolder=...,
      quantization_config=GGUFQuantizationConfig(compute_dtype=torch_dtype))``: its config is the folder's (no
      Hub), its weights stay GGUF blocks (``GGUFParameter``) dequantized layer by layer as they run. diffusers
      converts original-format (ComfyUI/city96) files of the classes ``from_single_file`` knows, and takes a file
      whose names are already the model's as it is.

    Raises:
        EngineLoadError: the folder names no denoiser; the GGUF file is missing or not a model of that class.
    """
    if choice.quantization == "none":
        return {}
    import diffusers

    denoiser, text_encoders, index = _components(folder)
    if choice.quantization == "gguf":
        model_class = getattr(diffusers, str(index[denoiser][1]))
        path = gguf_file(gguf)
        try:
            model = model_class.from_single_file(
                path, config=str(folder), subfolder=denoiser, torch_dtype=torch_dtype,
                quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=torch_dtype))
        except Exception as error:  # diffusers' errors: not GGUF, keys of another model
            raise EngineLoadError(f"could not load the gguf file {path} as the {model_class.__name__} of "
                                  f"{folder}: {error}") from error
        return {denoiser: model}
    quantized = [denoiser, *(text_encoders if choice.text_encoders else [])]
    if choice.quantization == "nf4":
        quant_kwargs: dict[str, Any] = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                        "bnb_4bit_compute_dtype": torch_dtype}
        return {"quantization_config": diffusers.PipelineQuantizationConfig(
            quant_backend="bitsandbytes_4bit", components_to_quantize=quantized, quant_kwargs=quant_kwargs)}
    import torchao.quantization
    import transformers

    method = (torchao.quantization.Int8WeightOnlyConfig if choice.quantization == "int8"
              else torchao.quantization.Float8WeightOnlyConfig)
    mapping: dict[str, Any] = {
        name: (diffusers.TorchAoConfig if index[name][0] == "diffusers" else transformers.TorchAoConfig)(method())
        for name in quantized}
    return {"quantization_config": diffusers.PipelineQuantizationConfig(quant_mapping=mapping)}


def quantization_of(pipeline: Any) -> str:
    """How the denoiser of a loaded ``pipeline`` holds its weights: ``"nf4"``, ``"int8"``, ``"fp8"``, ``"gguf"``
    (read from its diffusers ``hf_quantizer``'s config) or ``"none"``."""
    components = getattr(pipeline, "components", {})
    denoiser = next((components[name] for name in DENOISERS if components.get(name) is not None), None)
    config = getattr(getattr(denoiser, "hf_quantizer", None), "quantization_config", None)
    if config is None:
        return "none"
    method = str(getattr(getattr(config, "quant_method", ""), "value", getattr(config, "quant_method", "")))
    if method == "bitsandbytes":
        return str(getattr(config, "bnb_4bit_quant_type", "nf4")) if getattr(config, "load_in_4bit", False) else "int8"
    if method == "torchao":
        kind = type(getattr(config, "quant_type", None)).__name__
        return "int8" if kind.startswith("Int8") else "fp8" if kind.startswith("Float8") else kind
    return method


def local_folder(model: str) -> Path | None:
    """``model`` as a local folder or file, or None when it is a Hugging Face Hub id (``owner/name``).

    Raises:
        EngineLoadError: ``model`` is written as a path (absolute, ``./``, ``~``, a file suffix, or more than
            one ``/``) but nothing is there.
    """
    path = Path(model).expanduser()
    if path.exists():
        return path
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1 or "\\" in model:
        raise EngineLoadError(
            f"model folder {path} does not exist: point the model at a diffusers pipeline folder "
            "(one with model_index.json, e.g. written by save_pretrained), a .safetensors checkpoint or a "
            "Hugging Face Hub id such as stable-diffusion-v1-5/stable-diffusion-inpainting")
    return None


def cached_folder(model: str, index_file: str = "model_index.json") -> Path | None:
    """The folder of hub model ``model``'s snapshot in the Hugging Face cache when its ``index_file`` is there
    (``huggingface_hub.try_to_load_from_cache``: no network), else None (also without huggingface_hub)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(model, index_file)
    return Path(found).parent if isinstance(found, str) else None


def hub_model_hint(model: str, index_file: str = "model_index.json") -> str:
    """Check that the hub model ``model`` can be loaded at all; return the advice for a failed load.

    ``HF_HUB_OFFLINE=1`` forbids downloads, so a model that is not in the Hugging Face cache cannot load.

    Raises:
        EngineLoadError: offline mode is on and ``model``'s ``index_file`` is not cached.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    download = ("start the daemon once with network access and without HF_HUB_OFFLINE to download it, "
                "or point the model at a local folder that holds it")
    if not constants.HF_HUB_OFFLINE:
        return "check the network connection and the model id, or point the model at a local folder"
    if not isinstance(try_to_load_from_cache(model, index_file), str):
        raise EngineLoadError(
            f"model {model!r} is not downloaded (not in the Hugging Face cache {constants.HF_HUB_CACHE}) and "
            f"offline mode is on (HF_HUB_OFFLINE=1): {download}")
    return f"offline mode is on (HF_HUB_OFFLINE=1) and the download may be incomplete: {download}"


@dataclass(frozen=True)
class LoadContext:
    """What a family's loading code needs beyond the model: the load's progress, the weights' dtype and variant.

    Attributes:
        progress: ``progress(stage, step, total)`` of the load (:data:`daemon.engines.base.LoadProgress`).
        torch_dtype: the dtype the weights are loaded in (:func:`daemon.device.torch_dtype_for`).
        variant: diffusers weight variant (``"fp16"``) or empty.
    """

    progress: LoadProgress
    torch_dtype: torch.dtype
    variant: str

    def fetch(self, model: str, *, pipeline: bool = True) -> tuple[str, str]:
        """:func:`fetch` of ``model`` with this load's variant and progress."""
        return fetch(model, self.variant, self.progress, pipeline=pipeline)


def fetch(model: str, variant: str, progress: LoadProgress, *, pipeline: bool = True) -> tuple[str, str]:
    """``(local path, advice for a failed load)`` of ``model``: a local folder or file as it is, a hub id
    downloaded (:func:`download_pipeline` for pipelines, :func:`download_model` for single models).

    Raises:
        EngineLoadError: a path that does not exist; offline and not cached; the download failed.
    """
    folder = local_folder(model)
    if folder is not None:
        return str(folder), ("the folder must hold a diffusers pipeline (model_index.json and its components)"
                             if pipeline else "the folder must hold a diffusers model (config.json and weights)")
    hint = hub_model_hint(model, "model_index.json" if pipeline else "config.json")
    try:
        return (download_pipeline if pipeline else download_model)(model, variant, progress), hint
    except Exception as error:  # HTTP errors, OSError, offline-mode errors: "cannot download"
        raise EngineLoadError(f"could not download {model!r}: {error} ({hint})") from error
