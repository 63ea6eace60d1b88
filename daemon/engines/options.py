"""Per-request diffusion options on a loaded diffusers pipeline: scheduler, LoRAs, textual-inversion embeddings and
prompt weighting.

Stateless functions: what they build or remember (scheduler objects, loaded embedding tokens, the Compel wrapper)
is kept by the pipeline's :class:`daemon.engines.loaded.LoadedPipeline`, which calls them, on the worker thread:
the ``check_*`` functions from the engine's ``check`` (they change nothing), the others from its ``prepare``, once
per request. Every option the model cannot take raises :class:`protocol.ProtocolError` with
:attr:`protocol.ErrorCode.INCOMPATIBLE` and leaves the pipeline as usable as before. Importing this module is cheap:
torch, diffusers, peft, safetensors and compel are imported inside the functions.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from gimp_inpaint.protocol import Scheduler

from ..registry import EmbeddingSpec, LoraSpec
from .base import incompatible, is_out_of_memory


class SchedulerChoice(NamedTuple):
    """A diffusers scheduler class (by name) and the config values that make it the named sampler.

    ``needs_input_scaling``: the scheduler works in sigma space and needs the pipeline to call
    ``scheduler.scale_model_input`` each step (Kandinsky 2.2's decoder does not).
    """

    class_name: str
    overrides: dict[str, Any]
    needs_input_scaling: bool = False


def _sigmas(karras: bool) -> dict[str, bool]:
    """The noise-schedule switches of the k-diffusion style schedulers, all set, so that nothing of the model's
    own config (an SDXL model shipping ``use_karras_sigmas=True``) leaks into a sampler that should not have it."""
    return {"use_karras_sigmas": karras, "use_exponential_sigmas": False, "use_beta_sigmas": False}


SCHEDULER_CHOICES: dict[Scheduler, SchedulerChoice] = {
    # latents are not images in [-1, 1]: every SD/SDXL scheduler_config.json sets clip_sample false, DDIM's default
    # (True) would clamp them when a model's config does not say (configs built in memory, single-file models)
    Scheduler.DDIM: SchedulerChoice("DDIMScheduler", {"clip_sample": False}),
    Scheduler.EULER: SchedulerChoice("EulerDiscreteScheduler", _sigmas(False), needs_input_scaling=True),
    Scheduler.EULER_A: SchedulerChoice("EulerAncestralDiscreteScheduler", {}, needs_input_scaling=True),
    Scheduler.DPMPP_2M: SchedulerChoice("DPMSolverMultistepScheduler",
                                        {"algorithm_type": "dpmsolver++", "solver_order": 2, **_sigmas(False)}),
    Scheduler.DPMPP_2M_KARRAS: SchedulerChoice("DPMSolverMultistepScheduler",
                                               {"algorithm_type": "dpmsolver++", "solver_order": 2, **_sigmas(True)}),
    Scheduler.DPMPP_2M_SDE_KARRAS: SchedulerChoice(
        "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, **_sigmas(True)}),
    Scheduler.LMS_KARRAS: SchedulerChoice("LMSDiscreteScheduler", _sigmas(True), needs_input_scaling=True),
    Scheduler.UNIPC: SchedulerChoice("UniPCMultistepScheduler", _sigmas(False)),
}
"""Every :class:`protocol.Scheduler` but ``DEFAULT`` as a diffusers scheduler, after the A1111/k-diffusion
table of diffusers' "Schedulers" overview (https://huggingface.co/docs/diffusers/api/schedulers/overview): DPM++ 2M =
``DPMSolverMultistepScheduler``, its Karras variant ``use_karras_sigmas=True``, DPM++ 2M SDE Karras
``algorithm_type="sde-dpmsolver++"`` with Karras sigmas, Euler = ``EulerDiscreteScheduler``, Euler a =
``EulerAncestralDiscreteScheduler``, LMS Karras = ``LMSDiscreteScheduler(use_karras_sigmas=True)``; UniPC has no A1111
name. Each is built with ``Class.from_config(model's config, **overrides)``, so it keeps the model's betas,
``prediction_type`` and ``timestep_spacing``. The SDE variant of ``DPMSolverMultistepScheduler`` draws its noise with
diffusers' ``randn_tensor`` (no torchsde, which only ``DPMSolverSDEScheduler`` needs); LMS integrates its
coefficients with scipy."""

SCHEDULER_PACKAGES = {"LMSDiscreteScheduler": "scipy"}
"""Packages a scheduler class needs beyond diffusers' own requirements (``scheduling_lms_discrete.py`` imports
``scipy.integrate`` only when scipy is installed and fails at its first step without it)."""

MESSAGE_REASON_CHARS = 300
"""Longest library error text quoted in an INCOMPATIBLE message (diffusers puts whole tensors into some)."""


def _reason(error: BaseException) -> str:
    """``error``'s message on one line, at most :data:`MESSAGE_REASON_CHARS` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= MESSAGE_REASON_CHARS else text[:MESSAGE_REASON_CHARS] + "…"


_LOAD_ERRORS = (RuntimeError, OSError, ValueError, KeyError)
"""What diffusers raises for a LoRA or embedding file that does not fit: ``RuntimeError`` (size mismatch in
``load_state_dict``: a LoRA of another base), ``OSError`` (not a safetensors/pickle file), ``ValueError`` (wrong
embedding width, unknown state-dict layout, a token already taken), ``KeyError`` (unexpected key names)."""


def _require_package(package: str, needed_for: str) -> None:
    """Raises INCOMPATIBLE naming the pip package when ``package`` is not importable."""
    if importlib.util.find_spec(package) is None:
        raise incompatible(f"{needed_for} needs the Python package {package}: pip install {package}")


def default_scheduler_config(pipeline: Any) -> dict[str, Any]:
    """The ``default_config`` for :func:`build_scheduler`: the pipeline's scheduler config plus its class name
    (``_class_name``, the key of diffusers' ``scheduler_config.json``, which schedulers built in memory lack).

    Call it once, right after loading, before any scheduler is swapped in.
    """
    return {**pipeline.scheduler.config, "_class_name": type(pipeline.scheduler).__name__}


def scheduler_owners(pipeline: Any) -> list[Any]:
    """The pipelines whose ``scheduler`` a run uses: the pipeline itself, and for Kandinsky's combined pipelines
    also the decoder pipeline it delegates to (``decoder_pipe``, which holds its own reference). The prior's
    ``UnCLIPScheduler`` (``prior_scheduler``) is never swapped: it samples image embeddings, not latents."""
    return [pipeline, *([pipeline.decoder_pipe] if hasattr(pipeline, "decoder_pipe") else [])]


def build_scheduler(scheduler: Scheduler, default_config: Mapping[str, Any], *, scales_model_input: bool = True,
                    label: str = "this model") -> Any:
    """A new diffusers scheduler object for ``scheduler``; installs nothing.

    Args:
        scheduler: ``DEFAULT`` rebuilds the model's own scheduler; the others are :data:`SCHEDULER_CHOICES`.
        default_config: the model's scheduler config captured at load by :func:`default_scheduler_config` (must
            hold ``_class_name``); every scheduler is built from it with ``Class.from_config``.
        scales_model_input: False for pipelines that never call ``scheduler.scale_model_input`` (Kandinsky 2.2's
            decoder, ``pipeline_kandinsky2_2_inpainting.py``), which sigma-space schedulers need.
        label: what the model is, for the message (``"Kandinsky 2.2"``).

    Raises:
        ProtocolError: INCOMPATIBLE for a sigma-space scheduler (euler, euler_a, lms_karras) on a pipeline that does
            not scale the model input, or when the scheduler needs a package that is missing
            (:data:`SCHEDULER_PACKAGES`).
        KeyError: ``default_config`` has no ``_class_name``.
    """
    import diffusers

    if scheduler is Scheduler.DEFAULT:
        choice = SchedulerChoice(default_config["_class_name"], {})
    else:
        choice = SCHEDULER_CHOICES[scheduler]
    if choice.needs_input_scaling and not scales_model_input:
        usable = [str(key) for key, value in SCHEDULER_CHOICES.items() if not value.needs_input_scaling]
        raise incompatible(f"scheduler {str(scheduler)!r} needs a pipeline that scales the model input each step, "
                           f"which {label} does not; use one of: {', '.join([str(Scheduler.DEFAULT), *usable])}")
    package = SCHEDULER_PACKAGES.get(choice.class_name)
    if package is not None:
        _require_package(package, f"scheduler {str(scheduler)!r}")
    return getattr(diffusers, choice.class_name).from_config(default_config, **choice.overrides)


def install_scheduler(pipeline: Any, scheduler: Any) -> None:
    """Make ``scheduler`` (a diffusers scheduler object) the one every run of ``pipeline`` uses
    (:func:`scheduler_owners`)."""
    for owner in scheduler_owners(pipeline):
        owner.scheduler = scheduler


def _adapter_names(pipeline: Any) -> set[str]:
    """Names of the LoRA adapters in any of ``pipeline``'s components (a UNet shared with another pipeline through
    ``from_pipe`` carries the other's too); empty without peft, which every adapter needs, and for pipelines without
    diffusers' LoRA loader (Kandinsky)."""
    if importlib.util.find_spec("peft") is None or not hasattr(pipeline, "get_list_adapters"):
        return set()
    return {name for names in pipeline.get_list_adapters().values() for name in names}


def _lora_spec(name: str, available: Mapping[str, LoraSpec], all_loras: Mapping[str, LoraSpec]) -> LoraSpec:
    """``available[name]``, or INCOMPATIBLE saying why not (unknown name, or made for another base)."""
    if name in available:
        return available[name]
    usable = ", ".join(sorted(available)) or "none"
    if name in all_loras:
        raise incompatible(f"LoRA {name!r} is made for {all_loras[name].base} models and does not fit this model "
                            f"(LoRAs for it: {usable})")
    raise incompatible(f"LoRA {name!r} is not in the daemon's registry (LoRAs for this model: {usable})")


def _load_lora(pipeline: Any, spec: LoraSpec) -> None:
    """Load ``spec``'s file as adapter ``spec.name``; on failure remove whatever part got in, raise INCOMPATIBLE."""
    if not spec.path.is_file():
        raise incompatible(f"LoRA {spec.name!r}: file {spec.path} does not exist")
    try:
        pipeline.load_lora_weights(str(spec.path), adapter_name=spec.name)
    except _LOAD_ERRORS as error:
        if is_out_of_memory(error):
            raise
        # diffusers 0.42 removes the adapter when the UNet part fails, but leaves it in the UNet and the text
        # encoder when the text encoder part fails: delete what is left so that the pipeline runs as before.
        if spec.name in _adapter_names(pipeline):
            pipeline.delete_adapters(spec.name)
        raise incompatible(f"LoRA {spec.name!r} ({spec.path}) does not fit this model: {_reason(error)}") from error


def check_loras(requested: Mapping[str, float], available: Mapping[str, LoraSpec],
                *, all_loras: Mapping[str, LoraSpec] | None = None) -> list[LoraSpec]:
    """The registry entries of the ``requested`` LoRA names, in order; loads nothing, changes nothing.

    Raises:
        ProtocolError: INCOMPATIBLE when a name is not in ``available`` (unknown, or made for another base: then
            ``all_loras`` words the message), or LoRAs are requested and peft is not installed.
    """
    if not requested:
        return []
    _require_package("peft", "LoRAs")
    return [_lora_spec(name, available, all_loras or {}) for name in requested]


def apply_loras(pipeline: Any, requested: Mapping[str, float], available: Mapping[str, LoraSpec],
                *, all_loras: Mapping[str, LoraSpec] | None = None) -> None:
    """Activate exactly the LoRAs of ``requested`` on ``pipeline``, at their weights.

    Args:
        pipeline: a loaded diffusers pipeline with diffusers' ``LoraBaseMixin`` (SD and SDXL pipelines).
        requested: registry LoRA name → weight (``set_adapters``' ``adapter_weights``; 0 gives the pixels of no
            LoRA, 1 the LoRA as trained). Empty: all LoRAs are switched off (``disable_lora``).
        available: the registry's LoRAs for this model's base, by name.
        all_loras: every registry LoRA by name, only to word the error for a LoRA of another base.

    Raises:
        ProtocolError: INCOMPATIBLE when a name is not in ``available`` (unknown, or made for another base), its file
            is missing or does not load (the pipeline keeps working as before the call), or peft is not installed.
    """
    if not requested:
        if _adapter_names(pipeline):
            pipeline.disable_lora()
        return
    specs = check_loras(requested, available, all_loras=all_loras)
    present = _adapter_names(pipeline)
    for spec in specs:
        if spec.name not in present:  # adapters stay loaded (one load_lora_weights per name and UNet)
            _load_lora(pipeline, spec)
    pipeline.enable_lora()  # set_adapters does not undo an earlier disable_lora
    pipeline.set_adapters(list(requested), adapter_weights=[float(weight) for weight in requested.values()])


def _text_encoders(pipeline: Any) -> list[tuple[Any, Any]]:
    """``(tokenizer, text_encoder)`` pairs of ``pipeline``: one for SD, two for SDXL (CLIP-L, then OpenCLIP-G)."""
    pairs = [(pipeline.tokenizer, pipeline.text_encoder)]
    if getattr(pipeline, "text_encoder_2", None) is not None:
        pairs.append((pipeline.tokenizer_2, pipeline.text_encoder_2))
    return pairs


SDXL_EMBEDDING_KEYS = ("clip_l", "clip_g")
"""Tensors of an SDXL textual-inversion file: the token's vectors for CLIP-L (``text_encoder``, 768 wide) and
OpenCLIP-G (``text_encoder_2``, 1280 wide), loaded into each encoder as diffusers' textual-inversion guide shows."""


def _sdxl_embedding(path: Path) -> dict[str, Any] | None:
    """The ``clip_l``/``clip_g`` tensors of an SDXL embedding file, None for any other file (SD layouts, pickles)."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt") as file:
            if set(SDXL_EMBEDDING_KEYS) <= set(file.keys()):
                return {key: file.get_tensor(key) for key in SDXL_EMBEDDING_KEYS}
    except SafetensorError:
        return None  # not a safetensors file after all: diffusers' loader says what is wrong
    return None


def _embedding_parts(pipeline: Any, spec: EmbeddingSpec) -> list[tuple[Any, Any, Any]]:
    """``(embedding, tokenizer, text_encoder)`` loads for ``spec``: the file path for SD; the ``clip_l`` and
    ``clip_g`` tensors into the first and second encoder for SDXL (INCOMPATIBLE when the layout and model differ)."""
    encoders = _text_encoders(pipeline)
    sdxl = _sdxl_embedding(spec.path)
    if (sdxl is not None) != (len(encoders) == 2):
        made_for, model = ("SDXL", "SD") if sdxl is not None else ("SD", "SDXL")
        raise incompatible(f"embedding {spec.name!r} ({spec.path}) is made for {made_for} models, this model is "
                            f"{model} (SDXL embeddings hold {' and '.join(SDXL_EMBEDDING_KEYS)} tensors)")
    if sdxl is None:
        return [(str(spec.path), *encoders[0])]
    return [(sdxl[key], *pair) for key, pair in zip(SDXL_EMBEDDING_KEYS, encoders, strict=True)]


def _load_embedding(pipeline: Any, spec: EmbeddingSpec) -> None:
    """Load ``spec`` under its token into every text encoder of ``pipeline``, all or nothing (INCOMPATIBLE)."""
    if not spec.path.is_file():
        raise incompatible(f"embedding {spec.name!r}: file {spec.path} does not exist")
    done: list[tuple[Any, Any]] = []
    try:
        for embedding, tokenizer, text_encoder in _embedding_parts(pipeline, spec):
            pipeline.load_textual_inversion(embedding, token=spec.token, tokenizer=tokenizer,
                                            text_encoder=text_encoder)
            done.append((tokenizer, text_encoder))
    except _LOAD_ERRORS as error:
        if is_out_of_memory(error):
            raise
        for tokenizer, text_encoder in done:
            pipeline.unload_textual_inversion(spec.token, tokenizer=tokenizer, text_encoder=text_encoder)
        raise incompatible(f"embedding {spec.name!r} ({spec.path}) does not fit this model: "
                            f"{_reason(error)}") from error


def load_embeddings(pipeline: Any, prompts: Sequence[str], available: Sequence[EmbeddingSpec],
                    loaded: set[str]) -> None:
    """Load the textual-inversion embeddings whose token occurs in one of ``prompts``, once per pipeline.

    diffusers then expands a token in a plain prompt (``maybe_convert_prompt``) and :func:`prompt_kwargs`' Compel
    does the same for weighted ones. Loaded embeddings stay: a token only changes prompts that contain it.

    Args:
        pipeline: a loaded SD or SDXL diffusers pipeline (``TextualInversionLoaderMixin``).
        prompts: the request's prompt and negative prompt (plain substring search for each token).
        available: the registry's embeddings for this model's base. An SD embedding is any file diffusers'
            ``load_textual_inversion`` reads (diffusers or A1111 layout, ``.safetensors``/``.pt``/``.bin``); an
            SDXL embedding is a ``.safetensors`` file with ``clip_l`` (768-wide) and ``clip_g`` (1280-wide) tensors.
        loaded: tokens of the embeddings loaded into ``pipeline``; updated in place.

    Raises:
        ProtocolError: INCOMPATIBLE when a file is missing or does not fit the text encoders (wrong width, an SD
            embedding on SDXL); nothing of it stays loaded.
    """
    for spec in available:
        if spec.token in loaded or not any(spec.token in prompt for prompt in prompts):
            continue
        if spec.token not in pipeline.tokenizer.get_vocab():  # a tokenizer shared through from_pipe may have it
            _load_embedding(pipeline, spec)
        loaded.add(spec.token)


WEIGHTING_SYNTAX = re.compile(
    r"""(?:\)|"[^"]*")(?:\++|-+|\d+\.?\d*|\.\d+)   # (words)1.3  (words)+  "words"--
      | [^\s()",.+\-=](?:\++|-+)(?=[\s()",.=]|$)  # word+  word--  (a run of + or -, then a space, syntax, or end)
      | \.(?:attend|and|add|blend|swap)\(         # word.attend(0.5)  ("a", "b").blend(1, 1)  ("a", "b").and()
    """,
    re.VERBOSE,
)
"""Compel syntax that switches a prompt from diffusers' own encoding to Compel (its grammar: compel's
``prompt_parser.py``; https://github.com/damian0815/compel/blob/main/doc/syntax.md). Hyphens and pluses inside words
(``black-and-white``, ``t-shirt``) and parentheses without a weight (``(film)``) do not count; Compel would read the
latter as weight 1.0 anyway. A1111's ``(word:1.3)`` is not Compel syntax and goes to the text encoder as it is.
Compel's reading wins where an ordinary prompt happens to use its syntax: ``C++`` and ``5+ people`` upweight
``C`` and ``5``."""


def uses_weighting(text: str) -> bool:
    """True when ``text`` contains :data:`WEIGHTING_SYNTAX`."""
    return WEIGHTING_SYNTAX.search(text) is not None


def check_weighting(base: str | None, prompt: str, negative_prompt: str, *, family: str = "") -> bool:
    """True when ``prompt`` or ``negative_prompt`` uses :data:`WEIGHTING_SYNTAX` (so :func:`prompt_kwargs` will
    encode them with Compel); called before a job runs, so a model that cannot take it is refused up front.

    Args:
        base: the model's text-encoder base (:data:`daemon.registry.BASES`, the family's
            :attr:`daemon.engines.family.FamilyStrategy.base`); None for a family without a CLIP prompt encoder
            Compel supports (Kandinsky 2.2).
        family: the model's family, for the message.

    Raises:
        ProtocolError: INCOMPATIBLE for weighting syntax when ``base`` is None.
    """
    if not (uses_weighting(prompt) or uses_weighting(negative_prompt)):
        return False
    if base is None:
        raise incompatible(f"prompt weighting needs an SD or SDXL model; this model is {family or 'neither'} (remove "
                           "the weighting syntax: word+, word-, (words)1.3, .blend(, .and()")
    return True


def make_compel(pipeline: Any, base: str) -> Any:
    """A Compel wrapper of ``pipeline``: ``CompelForSD`` (base ``sd``) or ``CompelForSDXL`` (``sdxl``: both encoders,
    penultimate non-normalised hidden states, pooled output of the second), with long prompts split into 77-token
    chunks instead of truncated and embeddings' multi-vector tokens expanded as diffusers does. Building it loads
    nothing; :class:`daemon.engines.loaded.LoadedPipeline` keeps one per pipeline."""
    from compel import CompelForSD, CompelForSDXL, DiffusersTextualInversionManager

    wrapper = CompelForSDXL if base == "sdxl" else CompelForSD
    return wrapper(pipeline, textual_inversion_manager=DiffusersTextualInversionManager(pipeline))


def prompt_kwargs(compel: Callable[[], Any], base: str | None, prompt: str, negative_prompt: str, *,
                  family: str = "") -> dict[str, Any]:
    """The prompt keyword arguments of the pipeline call for ``prompt`` and ``negative_prompt``.

    Plain prompts (no :data:`WEIGHTING_SYNTAX` in either) come back unchanged as ``{"prompt", "negative_prompt"}``.
    Weighted ones are encoded by the Compel wrapper that ``compel()`` returns (:func:`make_compel`; called only
    then) into ``{"prompt_embeds", "negative_prompt_embeds"}`` (1×T×C tensors on the text encoder's device, T a
    multiple of 77 tokens and the same for both; C 768 for SD 1.x, 2048 for SDXL), plus
    ``"pooled_prompt_embeds"``/``"negative_pooled_prompt_embeds"`` (1×1280) for base ``sdxl``.

    Raises:
        ProtocolError: INCOMPATIBLE as :func:`check_weighting`.
    """
    if not check_weighting(base, prompt, negative_prompt, family=family):
        return {"prompt": prompt, "negative_prompt": negative_prompt}
    conditioning = compel()(prompt, negative_prompt=negative_prompt)
    kwargs = {"prompt_embeds": conditioning.embeds, "negative_prompt_embeds": conditioning.negative_embeds}
    if base == "sdxl":
        kwargs.update(pooled_prompt_embeds=conditioning.pooled_embeds,
                      negative_pooled_prompt_embeds=conditioning.negative_pooled_embeds)
    return kwargs
