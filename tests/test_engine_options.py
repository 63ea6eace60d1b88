"""Per-request diffusion options (daemon/engines/options.py) and the state a loaded pipeline keeps of them
(daemon/engines/loaded.py) on the tiny offline pipelines: schedulers, LoRAs, textual-inversion embeddings, Compel
prompt weighting."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gimp_inpaint.daemon.engines import options
from gimp_inpaint.daemon.engines.kandinsky import KANDINSKY22_INPAINT
from gimp_inpaint.daemon.engines.loaded import LoadedPipeline
from gimp_inpaint.daemon.engines.sd import SD, SD_INPAINT
from gimp_inpaint.daemon.engines.sdxl import SDXL_INPAINT
from gimp_inpaint.daemon.registry import EmbeddingSpec, LoraSpec
from gimp_inpaint.protocol import ErrorCode, ProtocolError, Scheduler

SIZE = 64
"""Side of the test images (pixels): 8×8 latents on the tiny pipelines."""

STEPS = 2

ORDINARY_PROMPTS = [
    "black-and-white photo, 35mm (film)",
    "a t-shirt with a well-known logo, sci-fi city at night.",
    "portrait, f/1.8, 85mm, self-portrait, oil on canvas",
    "x-ray of a hand, mother-of-pearl inlay, 1990s",
    "(masterpiece) a cat - a dog",
    "a cat (sitting) on a mat, (red:1.3) hat",  # A1111's weighting is not Compel's: passed to CLIP as it is
    '"2001" a space odyssey poster, 3.5 inch floppy',
    "",
]
WEIGHTED_PROMPTS = [
    "a (red)1.5 ball",
    "a (red ball)0.8",
    "a red+ ball",
    "a red++ ball, blue-- sky",
    "a ball-",
    "a (red)+ ball",
    '"a red ball"++',
    "a (red)-, blue",
    '("a red ball", "a blue cube").blend(0.7, 0.3)',
    '("a red ball", "a blue cube").and()',
    "a red.attend(1.2) ball",
]


def no_compel() -> Any:
    """The Compel factory of prompts that need none: calling it fails the test."""
    pytest.fail("Compel was asked for a plain prompt")


def test_importing_options_does_not_import_torch() -> None:
    code = ("import sys, gimp_inpaint.daemon.engines.options, gimp_inpaint.daemon.engines.loaded; "
            "sys.exit('torch' in sys.modules or 'diffusers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], check=False).returncode == 0


@pytest.mark.parametrize("prompt", ORDINARY_PROMPTS)
def test_ordinary_prompts_are_not_weighting_syntax(prompt: str) -> None:
    assert not options.uses_weighting(prompt)
    assert options.prompt_kwargs(no_compel, None, prompt, "blurry, low-res", family="kandinsky22-inpaint") == {
        "prompt": prompt, "negative_prompt": "blurry, low-res"}


@pytest.mark.parametrize("prompt", WEIGHTED_PROMPTS)
def test_compel_syntax_is_weighting(prompt: str) -> None:
    assert options.uses_weighting(prompt)


def test_weighting_on_kandinsky_is_incompatible() -> None:
    with pytest.raises(ProtocolError) as raised:
        options.prompt_kwargs(no_compel, None, "a ball", "ugly--", family="kandinsky22-inpaint")
    assert raised.value.code is ErrorCode.INCOMPATIBLE
    assert "SD or SDXL" in raised.value.message


# ------------------------------------------------------------------------------------------ tiny pipelines


def _load(folder: Path) -> Any:
    from diffusers import AutoPipelineForInpainting

    pipeline = AutoPipelineForInpainting.from_pretrained(folder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _run(pipeline: Any, prompt: str = "a red ball", steps: int = STEPS, **kwargs: Any) -> np.ndarray:
    """A ``steps``-step 64×64 inpaint of a fixed random image (right half masked): SIZE×SIZE×3 float32 in [0, 1]."""
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, SIZE // 2:] = 255
    prompts = {"prompt": prompt} if "prompt_embeds" not in kwargs else {}
    result = pipeline(**prompts, image=image, mask_image=Image.fromarray(mask), height=SIZE, width=SIZE,
                      num_inference_steps=steps, strength=1.0, generator=torch.Generator().manual_seed(0),
                      output_type="np", **kwargs).images[0]
    assert result.shape == (SIZE, SIZE, 3)
    assert np.isfinite(result).all()
    return result


@pytest.fixture
def sd_pipeline(tiny_inpaint_model: Path) -> Any:
    """A fresh tiny SD inpainting pipeline (tests change its scheduler, adapters and tokenizer)."""
    return _load(tiny_inpaint_model)


@pytest.fixture
def sdxl_pipeline(tiny_sdxl_inpaint_model: Path) -> Any:
    return _load(tiny_sdxl_inpaint_model)


def _incompatible(call: Callable[[], object]) -> str:
    """Run ``call``, which must raise INCOMPATIBLE; return the message."""
    with pytest.raises(ProtocolError) as raised:
        call()
    assert raised.value.code is ErrorCode.INCOMPATIBLE
    return raised.value.message


def _without_package(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``importlib.util.find_spec(package)`` answer None (the package looks uninstalled)."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == package
                        else find_spec(name, *args))


EXPECTED_SCHEDULERS = {
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpmpp_2m_sde_karras": ("DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "lms_karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {"use_karras_sigmas": False}),
}
"""The A1111 table of diffusers' schedulers overview, written out independently of the module's."""


def test_every_scheduler_has_its_class_and_config_and_draws_its_own_pixels(sd_pipeline: Any) -> None:
    assert set(EXPECTED_SCHEDULERS) == {str(scheduler) for scheduler in Scheduler} - {"default"}
    loaded = LoadedPipeline(sd_pipeline, SD_INPAINT)
    default = loaded.default_scheduler_config
    assert default["_class_name"] == "PNDMScheduler"
    # 3 steps: in 2, UniPC and DPM++ 2M both take first-order steps only (lower_order_final) and draw the same
    pixels = {"default": _run(sd_pipeline, steps=3)}
    for name, (class_name, config) in EXPECTED_SCHEDULERS.items():
        built = loaded.scheduler_for(Scheduler(name))
        assert sd_pipeline.scheduler is not built  # built, not installed
        loaded.use_scheduler(Scheduler(name))
        scheduler = sd_pipeline.scheduler
        assert scheduler is built
        assert type(scheduler).__name__ == class_name
        assert {key: scheduler.config[key] for key in config} == config
        # the model's noise schedule is kept
        for key in ("beta_start", "beta_end", "beta_schedule", "prediction_type", "steps_offset"):
            assert scheduler.config[key] == default[key], (name, key)
        pixels[name] = _run(sd_pipeline, steps=3)
    names = list(pixels)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert not np.array_equal(pixels[first], pixels[second]), (first, second)


def test_default_restores_the_model_scheduler_and_switching_reuses_objects(sd_pipeline: Any) -> None:
    loaded = LoadedPipeline(sd_pipeline, SD_INPAINT)
    default = loaded.default_scheduler_config
    before = _run(sd_pipeline)
    loaded.use_scheduler(Scheduler.EULER_A)
    euler_a = sd_pipeline.scheduler
    loaded.use_scheduler(Scheduler.DEFAULT)
    assert type(sd_pipeline.scheduler).__name__ == "PNDMScheduler"
    assert all(sd_pipeline.scheduler.config[key] == value for key, value in default.items() if key[0] != "_")
    assert np.array_equal(_run(sd_pipeline), before)
    pndm = sd_pipeline.scheduler
    loaded.use_scheduler(Scheduler.EULER_A)
    assert sd_pipeline.scheduler is euler_a
    loaded.use_scheduler(Scheduler.DEFAULT)
    assert sd_pipeline.scheduler is pndm


def test_lms_without_scipy_names_the_package(sd_pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_package(monkeypatch, "scipy")
    loaded = LoadedPipeline(sd_pipeline, SD_INPAINT)
    message = _incompatible(lambda: loaded.use_scheduler(Scheduler.LMS_KARRAS))
    assert "pip install scipy" in message
    assert type(sd_pipeline.scheduler).__name__ == "PNDMScheduler"


def test_kandinsky_swaps_the_decoder_scheduler_only(tiny_kandinsky22_inpaint_model: Path) -> None:
    pipeline = _load(tiny_kandinsky22_inpaint_model)
    loaded = LoadedPipeline(pipeline, KANDINSKY22_INPAINT)
    prior_scheduler = pipeline.prior_scheduler
    before = _run(pipeline, prior_num_inference_steps=STEPS)
    loaded.use_scheduler(Scheduler.DPMPP_2M_KARRAS)
    assert type(pipeline.decoder_pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipeline.scheduler is pipeline.decoder_pipe.scheduler
    assert pipeline.prior_scheduler is prior_scheduler and pipeline.prior_pipe.scheduler is prior_scheduler
    assert not np.array_equal(_run(pipeline, prior_num_inference_steps=STEPS), before)
    for name in ("euler", "euler_a", "lms_karras"):
        assert "Kandinsky" in _incompatible(lambda name=name: loaded.use_scheduler(Scheduler(name)))
    assert type(pipeline.decoder_pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    loaded.use_scheduler(Scheduler.DEFAULT)
    assert np.array_equal(_run(pipeline, prior_num_inference_steps=STEPS), before)
    # nothing requested: the other options are no-ops; Kandinsky takes no LoRAs and no embeddings
    options.apply_loras(pipeline, {}, {})
    options.load_embeddings(pipeline, ["a ball"], [], set())
    assert "LoRAs for this model: none" in _incompatible(lambda: options.apply_loras(pipeline, {"x": 1.0}, {}))


def test_a_pipelines_state_dies_with_it(tiny_inpaint_model: Path) -> None:
    """No side table outlives a pipeline: dropping its LoadedPipeline (what the pool's eviction does) frees it, with
    the schedulers and the Compel wrapper built for it."""
    import gc
    import weakref

    pipeline = _load(tiny_inpaint_model)
    loaded = LoadedPipeline(pipeline, SD_INPAINT)
    loaded.use_scheduler(Scheduler.EULER)
    loaded.prompt_kwargs("a red+ ball", "")
    alive = weakref.ref(pipeline)
    del pipeline, loaded
    gc.collect()
    assert alive() is None


# ------------------------------------------------------------------------------------------ LoRAs


@pytest.fixture
def loras(tiny_sd_lora: Path, tiny_sdxl_lora: Path) -> dict[str, LoraSpec]:
    """The registry's LoRAs: one for SD, one for SDXL."""
    return {"sd-lora": LoraSpec("sd-lora", tiny_sd_lora, "sd"), "xl-lora": LoraSpec("xl-lora", tiny_sdxl_lora, "sdxl")}


def _counting(monkeypatch: pytest.MonkeyPatch, pipeline: Any, method: str) -> list[tuple[Any, ...]]:
    """Record the calls of ``pipeline.<method>`` (still calling it); returns the list of their arguments."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(pipeline, method)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, method, wrapper)
    return calls


def test_lora_changes_pixels_and_weight_zero_or_none_gives_them_back(
        sd_pipeline: Any, loras: dict[str, LoraSpec], monkeypatch: pytest.MonkeyPatch) -> None:
    available = {"sd-lora": loras["sd-lora"]}
    loads = _counting(monkeypatch, sd_pipeline, "load_lora_weights")
    plain = _run(sd_pipeline)
    options.apply_loras(sd_pipeline, {"sd-lora": 1.0}, available)
    with_lora = _run(sd_pipeline)
    assert np.abs(with_lora - plain).max() > 0.01
    options.apply_loras(sd_pipeline, {"sd-lora": 0.0}, available)
    assert np.array_equal(_run(sd_pipeline), plain)
    options.apply_loras(sd_pipeline, {"sd-lora": 0.5}, available)
    half = _run(sd_pipeline)
    assert not np.array_equal(half, plain) and not np.array_equal(half, with_lora)
    options.apply_loras(sd_pipeline, {}, available)
    assert np.array_equal(_run(sd_pipeline), plain)
    options.apply_loras(sd_pipeline, {"sd-lora": 1.0}, available)
    assert np.array_equal(_run(sd_pipeline), with_lora)
    assert len(loads) == 1
    assert sd_pipeline.get_list_adapters() == {"unet": ["sd-lora"], "text_encoder": ["sd-lora"]}


def test_lora_of_another_base_or_unknown_name_is_incompatible(sd_pipeline: Any, loras: dict[str, LoraSpec]) -> None:
    available = {"sd-lora": loras["sd-lora"]}
    message = _incompatible(lambda: options.apply_loras(sd_pipeline, {"sd-lora": 1.0, "xl-lora": 1.0}, available,
                                                        all_loras=loras))
    assert "'xl-lora' is made for sdxl" in message and "sd-lora" in message
    message = _incompatible(lambda: options.apply_loras(sd_pipeline, {"nope": 1.0}, available,
                                                        all_loras=loras))
    assert "'nope' is not in the daemon's registry" in message
    assert not any(sd_pipeline.get_list_adapters().values())  # names are checked before anything loads


def test_sdxl_lora_file_on_sd_fails_cleanly(sd_pipeline: Any, loras: dict[str, LoraSpec]) -> None:
    """A registry entry that claims an SDXL LoRA is for SD: the load fails, nothing stays loaded."""
    plain = _run(sd_pipeline)
    mislabelled = LoraSpec("xl-lora", loras["xl-lora"].path, "sd")
    available = {"sd-lora": loras["sd-lora"], "xl-lora": mislabelled}
    options.apply_loras(sd_pipeline, {"sd-lora": 1.0}, available)
    with_lora = _run(sd_pipeline)
    message = _incompatible(lambda: options.apply_loras(sd_pipeline, {"xl-lora": 1.0}, available))
    assert str(mislabelled.path) in message and "size mismatch" in message
    assert sd_pipeline.get_list_adapters() == {"unet": ["sd-lora"], "text_encoder": ["sd-lora"]}
    assert np.array_equal(_run(sd_pipeline), with_lora)  # the request failed, the earlier adapters are untouched
    options.apply_loras(sd_pipeline, {}, available)
    assert np.array_equal(_run(sd_pipeline), plain)


def test_lora_whose_text_encoder_part_fails_leaves_no_unet_adapter(
        sd_pipeline: Any, loras: dict[str, LoraSpec], tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(loras["sd-lora"].path)
    # the UNet part loads first (diffusers' load_lora_weights), then this text encoder part fails
    state = {key: torch.zeros(4, 48) if key.startswith("text_encoder.") and "lora_A" in key else value
             for key, value in state.items()}
    save_file(state, tmp_path / "broken.safetensors")
    spec = LoraSpec("broken", tmp_path / "broken.safetensors", "sd")
    plain = _run(sd_pipeline)
    message = _incompatible(lambda: options.apply_loras(sd_pipeline, {"broken": 1.0}, {"broken": spec}))
    assert "broken.safetensors" in message
    assert not any(sd_pipeline.get_list_adapters().values())
    assert np.array_equal(_run(sd_pipeline), plain)


def test_lora_file_missing_or_not_a_lora(sd_pipeline: Any, tmp_path: Path) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    for path in (tmp_path / "missing.safetensors", tmp_path / "junk.safetensors"):
        spec = LoraSpec("x", path, "sd")
        assert str(path) in _incompatible(lambda spec=spec: options.apply_loras(sd_pipeline, {"x": 1.0}, {"x": spec}))
    assert not any(sd_pipeline.get_list_adapters().values())


def test_loras_without_peft_ask_for_it(sd_pipeline: Any, loras: dict[str, LoraSpec],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _without_package(monkeypatch, "peft")
    message = _incompatible(lambda: options.apply_loras(sd_pipeline, {"sd-lora": 1.0}, loras))
    assert "pip install peft" in message
    options.apply_loras(sd_pipeline, {}, loras)  # nothing requested, nothing loaded: no peft needed


def test_sdxl_lora_on_sdxl(sdxl_pipeline: Any, loras: dict[str, LoraSpec]) -> None:
    plain = _run(sdxl_pipeline)
    options.apply_loras(sdxl_pipeline, {"xl-lora": 1.0}, {"xl-lora": loras["xl-lora"]})
    assert not np.array_equal(_run(sdxl_pipeline), plain)
    options.apply_loras(sdxl_pipeline, {}, {"xl-lora": loras["xl-lora"]})
    assert np.array_equal(_run(sdxl_pipeline), plain)


# ------------------------------------------------------------------------------------------ embeddings


def test_embedding_token_changes_the_output_once_loaded(
        sd_pipeline: Any, tiny_sd_embedding: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    path, token = tiny_sd_embedding
    spec = EmbeddingSpec("tiny", path, token, "sd")
    prompt = f"a {token} ball"
    unloaded = _run(sd_pipeline, prompt)  # the tokenizer spells the unknown token out, character by character
    loads = _counting(monkeypatch, sd_pipeline, "load_textual_inversion")
    loaded: set[str] = set()
    options.load_embeddings(sd_pipeline, ["a ball", ""], [spec], loaded)
    assert loaded == set() and token not in sd_pipeline.tokenizer.get_vocab()
    options.load_embeddings(sd_pipeline, ["a ball", f"ugly {token}"], [spec], loaded)
    options.load_embeddings(sd_pipeline, [prompt, ""], [spec], loaded)
    assert loaded == {token} and len(loads) == 1
    assert token in sd_pipeline.tokenizer.get_vocab()
    assert np.abs(_run(sd_pipeline, prompt) - unloaded).max() > 0.01


def test_embedding_that_does_not_fit_is_incompatible(sd_pipeline: Any, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"emb_params": torch.randn(2, 48)}, tmp_path / "wide.safetensors")
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 32)}, tmp_path / "xl.safetensors")
    plain = _run(sd_pipeline, "a <x> ball")
    for file, expected in (("wide.safetensors", "incorrect shape"), ("xl.safetensors", "made for SDXL"),
                           ("missing.pt", "does not exist")):
        spec = EmbeddingSpec("x", tmp_path / file, "<x>", "sd")
        loaded: set[str] = set()
        assert expected in _incompatible(lambda spec=spec, loaded=loaded: options.load_embeddings(
            sd_pipeline, ["a <x> ball"], [spec], loaded))
        assert loaded == set() and "<x>" not in sd_pipeline.tokenizer.get_vocab()
    assert np.array_equal(_run(sd_pipeline, "a <x> ball"), plain)


def test_sdxl_embedding_loads_into_both_text_encoders(sdxl_pipeline: Any, tiny_sd_embedding: tuple[Path, str],
                                                      tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 32)}, tmp_path / "xl.safetensors")
    prompt = "a <xl> ball"
    unloaded = _run(sdxl_pipeline, prompt)
    loaded: set[str] = set()
    sd_spec = EmbeddingSpec("sd", tiny_sd_embedding[0], "<sd>", "sd")
    assert "made for SD models" in _incompatible(lambda: options.load_embeddings(sdxl_pipeline, ["<sd>"], [sd_spec],
                                                                                 loaded))
    options.load_embeddings(sdxl_pipeline, [prompt], [EmbeddingSpec("xl", tmp_path / "xl.safetensors", "<xl>",
                                                                    "sdxl")], loaded)
    assert loaded == {"<xl>"}
    assert "<xl>" in sdxl_pipeline.tokenizer.get_vocab() and "<xl>" in sdxl_pipeline.tokenizer_2.get_vocab()
    assert "<sd>" not in sdxl_pipeline.tokenizer.get_vocab()
    assert np.abs(_run(sdxl_pipeline, prompt) - unloaded).max() > 0.01


# ------------------------------------------------------------------------------------------ prompt weighting


def test_weighted_prompt_gives_other_embeddings_and_runs(sd_pipeline: Any) -> None:
    import torch

    loaded = LoadedPipeline(sd_pipeline, SD_INPAINT)
    plain = loaded.prompt_kwargs("a red ball", "ugly")
    assert plain == {"prompt": "a red ball", "negative_prompt": "ugly"}
    weighted = loaded.prompt_kwargs("a (red)1.5 ball", "ugly")
    assert set(weighted) == {"prompt_embeds", "negative_prompt_embeds"}
    embeds, negative = sd_pipeline.encode_prompt("a red ball", "cpu", 1, True, "ugly")
    assert weighted["prompt_embeds"].shape == embeds.shape == (1, 77, 32)
    assert torch.equal(weighted["negative_prompt_embeds"], negative)
    assert not torch.allclose(weighted["prompt_embeds"], embeds, atol=1e-3)
    assert not np.array_equal(_run(sd_pipeline, **weighted), _run(sd_pipeline, "a red ball", negative_prompt="ugly"))
    # a weight of 1 is the plain prompt: the same embeddings diffusers computes
    same = loaded.prompt_kwargs("a (red)1.0 ball", "ugly")
    assert torch.allclose(same["prompt_embeds"], embeds, atol=1e-5)


def test_weighted_negative_prompt_and_long_prompts_are_padded_alike(sd_pipeline: Any) -> None:
    long_prompt = "a red ball on a green lawn under a blue sky " * 3  # over 77 one-character tokens
    kwargs = LoadedPipeline(sd_pipeline, SD).prompt_kwargs(long_prompt, "blurry--")
    assert kwargs["prompt_embeds"].shape == kwargs["negative_prompt_embeds"].shape
    assert kwargs["prompt_embeds"].shape[1] > 77 and kwargs["prompt_embeds"].shape[1] % 77 == 0
    _run(sd_pipeline, **kwargs)


def test_weighted_prompt_on_sdxl_has_pooled_embeddings(sdxl_pipeline: Any) -> None:
    import torch

    kwargs = LoadedPipeline(sdxl_pipeline, SDXL_INPAINT).prompt_kwargs("a (red)1.5 ball", "ugly")
    assert set(kwargs) == {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                           "negative_pooled_prompt_embeds"}
    embeds, negative, pooled, _ = sdxl_pipeline.encode_prompt("a red ball", device="cpu",
                                                                            negative_prompt="ugly")
    assert kwargs["prompt_embeds"].shape == embeds.shape == (1, 77, 64)
    assert kwargs["pooled_prompt_embeds"].shape == pooled.shape == (1, 32)
    assert torch.allclose(kwargs["negative_prompt_embeds"], negative, atol=1e-5)
    assert not torch.allclose(kwargs["prompt_embeds"], embeds, atol=1e-3)
    assert not np.array_equal(_run(sdxl_pipeline, **kwargs), _run(sdxl_pipeline, "a red ball",
                                                                   negative_prompt="ugly"))
