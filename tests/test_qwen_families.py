"""FLUX.2 klein, Z-Image and Qwen-Image beyond their rows of ``test_each_family_through_the_daemon``: the handshake
before and after loading, what they refuse, where guidance goes, and the unpacking of their latents for previews; on
the tiny pipelines of tests/tiny_qwen_pipelines.py, through the real engine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gimp_inpaint.daemon.engines import previews
from gimp_inpaint.daemon.engines.base import EngineJob, Previews
from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
from gimp_inpaint.daemon.engines.families import FAMILY_STRATEGIES, family_from_index
from gimp_inpaint.daemon.pool import ModelPool
from gimp_inpaint.daemon.registry import LoraSpec, ModelSpec, Registry
from gimp_inpaint.protocol import FILL_OPTIONS, ErrorCode, Family, ProtocolError
from test_families import astronaut_crop, job

pytestmark = pytest.mark.diffusers

FAMILIES = {"flux2-klein": Family.FLUX2_KLEIN_INPAINT, "z-image": Family.Z_IMAGE_INPAINT,
            "qwen-image": Family.QWEN_IMAGE_INPAINT}
"""Engine name → the family its tiny model is."""


@pytest.fixture(scope="module")
def engines(tiny_flux2_klein_model: Path, tiny_z_image_model: Path, tiny_qwen_image_model: Path,
            tiny_sd_lora: Path) -> dict[str, DiffusersEngine]:
    """One ``auto`` engine per family on one pool, with an SD LoRA (base ``sd``) in the registry."""
    folders = {"flux2-klein": tiny_flux2_klein_model, "z-image": tiny_z_image_model,
               "qwen-image": tiny_qwen_image_model}
    registry = Registry(loras=(LoraSpec("sd-lora", tiny_sd_lora, "sd"),))
    pool = ModelPool(10**11)
    return {name: DiffusersEngine(ModelSpec(name, str(folder)), registry, pool, device="cpu")
            for name, folder in folders.items()}


def generate(engine: DiffusersEngine, **fields: Any) -> np.ndarray:
    """The masked pixels (int) of one 3-step variant of seed 5 on :func:`test_families.astronaut_crop`."""
    variant = job(5, **{"prompt": "a red balloon", "num_inference_steps": 3, **fields})
    engine.check(variant)
    engine.prepare(variant)
    _, mask = astronaut_crop()
    return engine.inpaint(variant, lambda step, total: None, lambda: False)[mask == 255].astype(int)


UNGUIDED = {"guidance_scale": FILL_OPTIONS["guidance_scale"].default}
"""The table's guidance, which the step-distilled klein accepts as unused (:func:`test_families.job` has 5)."""


def refusal(engine: DiffusersEngine, **fields: Any) -> str:
    """The INCOMPATIBLE message :meth:`DiffusersEngine.check` answers ``fields`` (over :data:`UNGUIDED`) with."""
    with pytest.raises(ProtocolError) as caught:
        engine.check(job(1, **{**UNGUIDED, **fields}))
    assert caught.value.code is ErrorCode.INCOMPATIBLE
    return str(caught.value)


def test_the_family_is_read_from_model_index_before_loading(engines: dict[str, DiffusersEngine]) -> None:
    """The tiny folders name the hub repos' text-to-image classes (``Flux2KleinPipeline``, ``ZImagePipeline``,
    ``QwenImagePipeline``): the family, its options and model-card defaults are in the handshake before any load."""
    expected = {"flux2-klein": {"num_inference_steps": 4},  # step-distilled: no guidance
                "z-image": {"num_inference_steps": 8, "guidance_scale": 0.0},
                "qwen-image": {"num_inference_steps": 50, "guidance_scale": 4.0}}
    for name, family in FAMILIES.items():
        assert family_from_index(Path(engines[name].spec.model)) is family
        fresh = DiffusersEngine(engines[name].spec, Registry(), ModelPool(1), device="cpu")
        info = fresh.info()
        assert (info.family, info.defaults, fresh.pool.keys()) == (family, expected[name], [])
        assert "scheduler" not in info.options and "refiner_strength" not in info.options and "loras" in info.options
        assert ("negative_prompt" in info.options) == (family is not Family.FLUX2_KLEIN_INPAINT)
        assert ("guidance_scale" in info.options) == (family is not Family.FLUX2_KLEIN_INPAINT)
        assert not info.refiner


def test_the_loaded_pipeline_is_the_familys_inpainting_pipeline_at_128_px(
        engines: dict[str, DiffusersEngine]) -> None:
    classes = {"flux2-klein": "Flux2KleinInpaintPipeline", "z-image": "ZImageInpaintPipeline",
               "qwen-image": "QwenImageInpaintPipeline"}
    for name, engine in engines.items():
        engine.load()
        strategy = FAMILY_STRATEGIES[FAMILIES[name]]
        assert type(engine.pipeline).__name__ == classes[name]
        assert strategy.native_size(engine.pipeline) == 128 and strategy.size_multiple == 16
        assert engine.info().detail.startswith("loaded on cpu")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_what_the_families_refuse(engines: dict[str, DiffusersEngine], name: str) -> None:
    """A LoRA of another base, a sampler of the SD schedulers, a refining pass, prompt weighting: INCOMPATIBLE."""
    engine = engines[name]
    assert "made for sd models" in refusal(engine, loras={"sd-lora": 1.0})
    assert "flow-matching" in refusal(engine, scheduler="euler_a")
    assert "refining pass" in refusal(engine, refiner_strength=0.3)
    assert "weighting" in refusal(engine, prompt="a (red)1.5 balloon")


def test_flux2_klein_refuses_a_negative_prompt(engines: dict[str, DiffusersEngine]) -> None:
    assert "Flux2KleinInpaintPipeline has none" in refusal(engines["flux2-klein"], negative_prompt="blurry")


def test_a_base_klein_model_reports_the_base_variants_defaults_and_is_guided(tiny_flux2_klein_model: Path,
                                                                            tmp_path: Path) -> None:
    """A FLUX.2 klein folder whose model_index.json says ``is_distilled`` false (FLUX.2-klein-base-4B's) gets 50
    steps at guidance 4 in the handshake, auto or declared, before and after loading, where the step-distilled
    model's are 4 at 1; and its guidance changes the pixels (classifier-free guidance against the empty
    prompt; the distilled one takes none: the test below)."""
    base = tmp_path / "klein-base"
    shutil.copytree(tiny_flux2_klein_model, base)
    index = json.loads((base / "model_index.json").read_text())
    assert index["is_distilled"] is True  # the tiny model is the distilled one …
    (base / "model_index.json").write_text(json.dumps({**index, "is_distilled": False}))  # … made a base one
    for declared in (None, "flux2-klein-inpaint"):
        engine = DiffusersEngine(ModelSpec("base", str(base), family=declared), Registry(), ModelPool(10**11),
                                 device="cpu")
        assert engine.info().defaults == {"num_inference_steps": 50, "guidance_scale": 4.0}
    engine.load()
    assert engine.info().defaults == {"num_inference_steps": 50, "guidance_scale": 4.0}
    assert not np.array_equal(generate(engine, guidance_scale=1.0), generate(engine, guidance_scale=6.0))


def test_z_image_shows_linear_previews_klein_none_and_a_mismatch_turns_them_off(
        tiny_flux2_klein_model: Path, tiny_z_image_model: Path, tiny_qwen_image_model: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """With ``previews = "auto"`` and no tiny autoencoder cached, Z-Image (FLUX.1's autoencoder) maps each step's
    latents linearly, at the latents' size for the 120×96 crop (the model's 128×96 over the tiny autoencoder's
    ``vae_scale_factor``); FLUX.2 klein's 32 channels have no map, so none. The tiny Qwen-Image's autoencoder has 4
    channels where the real one (Wan 2.1's) and its map have 16: its previews go off with a warning at the first,
    and the fill goes on."""
    monkeypatch.setattr(previews, "cached_folder", lambda model, index_file: None)
    image, mask = astronaut_crop()
    for folder, previewed in ((tiny_z_image_model, True), (tiny_qwen_image_model, False),
                              (tiny_flux2_klein_model, False)):
        engine = DiffusersEngine(ModelSpec("model", str(folder)), Registry(), ModelPool(10**11), device="cpu")
        shown: list[tuple[int, ...]] = []
        options = job(2, prompt="a red balloon", num_inference_steps=3, **UNGUIDED).options
        variant = EngineJob(image, mask, options, 2,
                            previews=Previews(lambda step: True, lambda step, rgb, seen=shown: seen.append(rgb.shape)))
        engine.inpaint(variant, lambda step, total: None, lambda: False)
        scale = engine.pipeline.vae_scale_factor
        assert shown == ([(96 // scale, 128 // scale, 3)] * 3 if previewed else []), (folder, scale)
    assert caplog.text.count("previews off, linear cannot decode its latents: the linear map takes 16 latent "
                             "channels, these have 4") == 1


def test_guidance_reaches_the_pipelines_guidance(engines: dict[str, DiffusersEngine],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Z-Image's ``guidance_scale`` (classifier-free guidance from above 0) changes the pixels; Qwen-Image's goes to
    ``true_cfg_scale``: above 1 each step runs the transformer on the prompt and on the negative prompt (an empty one
    included), at 1 once; the step-distilled klein takes none (``is_distilled``): a guidance is refused, and its
    pipeline gets 1 whatever the request's (unused) default."""
    z_image = engines["z-image"]
    guided = generate(z_image, guidance_scale=10.0, negative_prompt="blurry")
    assert np.abs(guided - generate(z_image, guidance_scale=0.0, negative_prompt="blurry")).mean() > 0.5

    qwen = engines["qwen-image"]
    qwen.load()
    transformer = qwen.pipeline.transformer
    calls: list[int] = []
    forward = transformer.forward
    monkeypatch.setattr(transformer, "forward", lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs))
    for guidance, negative, passes in ((4.0, "", 2), (4.0, "blurry", 2), (1.0, "blurry", 1)):
        calls.clear()
        generate(qwen, guidance_scale=guidance, negative_prompt=negative)
        assert len(calls) == 3 * passes, (guidance, negative)

    klein = engines["flux2-klein"]  # step-distilled: it runs at guidance 1, the option refused, the default unused
    assert "is step-distilled (is_distilled in its model_index.json) and runs without guidance" in refusal(
        klein, guidance_scale=5.0)
    variant = job(1)
    assert klein.strategy is not None and klein.strategy.call_kwargs(variant, variant.image, variant.mask) == {
        "strength": variant.options.strength, "guidance_scale": 1.0}


def test_packed_latents_are_unpacked_for_previews(engines: dict[str, DiffusersEngine]) -> None:
    """A step callback's latents as the N×C×h×w a previewer decodes: klein's tokens back into the grid, batch norm
    undone and patches unfolded exactly as its pipeline's post-processing; Qwen-Image's by its ``_unpack_latents``;
    Z-Image's as they are."""
    import torch

    width, height = 128, 96
    klein = engines["flux2-klein"].pipeline
    torch.manual_seed(0)
    grid = torch.randn(1, 4, height // 2, width // 2)  # 2×2 patches of the one-channel latents
    packed = klein._pack_latents(grid)
    expected = klein._unpatchify_latents(grid * torch.sqrt(klein.vae.bn.running_var.view(1, -1, 1, 1)
                                                           + klein.vae.config.batch_norm_eps)
                                         + klein.vae.bn.running_mean.view(1, -1, 1, 1))
    unpacked = FAMILY_STRATEGIES[Family.FLUX2_KLEIN_INPAINT].preview_latents(klein, packed, width, height)
    assert unpacked.shape == (1, 1, height, width)
    torch.testing.assert_close(unpacked, expected)

    qwen = engines["qwen-image"].pipeline
    latents = torch.randn(1, 4, height, width)
    packed = qwen._pack_latents(latents, 1, 4, height, width)
    torch.testing.assert_close(
        FAMILY_STRATEGIES[Family.QWEN_IMAGE_INPAINT].preview_latents(qwen, packed, width, height), latents)

    z_image = engines["z-image"].pipeline
    latents = torch.randn(1, 16, height, width)
    assert FAMILY_STRATEGIES[Family.Z_IMAGE_INPAINT].preview_latents(z_image, latents, width, height) is latents
