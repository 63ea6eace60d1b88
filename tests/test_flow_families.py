"""The SD 3, FLUX.1 Fill, FLUX.1 Kontext and Chroma families (issue 13) on their tiny pipelines
(tests/tiny_flow_pipelines.py), beyond the request each runs through the daemon in tests/test_families.py: what the
handshake knows before loading, a declared family the folder contradicts, FLUX.1 LoRAs, the steps a strength runs,
previews of their latents (FLUX.1's packed ones included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gimp_inpaint.daemon.engines import previews
from gimp_inpaint.daemon.engines.base import EngineJob, EngineLoadError, Previews
from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
from gimp_inpaint.daemon.engines.families import FAMILY_STRATEGIES, family_from_index
from gimp_inpaint.daemon.pool import ModelPool
from gimp_inpaint.daemon.registry import LoraSpec, ModelSpec, Registry
from gimp_inpaint.protocol import ErrorCode, Family, ProtocolError
from test_families import astronaut_crop, job

pytestmark = pytest.mark.diffusers

FLOW_MODELS = [
    ("tiny_sd3_model", Family.SD3_INPAINT, 40, 4.5),
    ("tiny_flux_fill_model", Family.FLUX_FILL, 50, 30.0),
    ("tiny_flux_kontext_model", Family.FLUX_KONTEXT_INPAINT, 28, 2.5),
    ("tiny_chroma_model", Family.CHROMA_INPAINT, 40, 3.0),
]
"""Fixture of each tiny model, its family, and the steps and guidance of its model card."""


def registry(sd_lora: Path, flux_lora: Path) -> Registry:
    """A registry with the tiny SD LoRA (base ``sd``) and the tiny FLUX.1 LoRA (base ``flux``)."""
    return Registry(loras=(LoraSpec("sd-lora", sd_lora, "sd"), LoraSpec("flux-lora", flux_lora, "flux")))


@pytest.mark.parametrize(("fixture", "family", "steps", "guidance"), FLOW_MODELS)
def test_the_handshake_knows_each_family_before_it_loads(request: pytest.FixtureRequest, tiny_sd_lora: Path,
                                                         tiny_flux_lora: Path, fixture: str, family: Family,
                                                         steps: int, guidance: float) -> None:
    folder = request.getfixturevalue(fixture)
    assert family_from_index(folder) is family  # model_index.json's class, no UNet config
    pool = ModelPool(1)
    info = DiffusersEngine(ModelSpec("model", str(folder)), registry(tiny_sd_lora, tiny_flux_lora), pool,
                           device="cpu").info()
    assert (info.family, info.available, pool.keys()) == (family, True, [])
    assert info.defaults == {"num_inference_steps": steps, "guidance_scale": guidance}
    assert info.options == FAMILY_STRATEGIES[family].options() and not info.refiner
    assert not {"scheduler", "refiner_strength", "eta"} & set(info.options)
    assert ("negative_prompt" in info.options) == (family in (Family.SD3_INPAINT, Family.CHROMA_INPAINT))
    assert info.loras == (["flux-lora"] if family in (Family.FLUX_FILL, Family.FLUX_KONTEXT_INPAINT) else [])


@pytest.mark.parametrize(("fixture", "declared"), [
    ("tiny_flux_fill_model", "flux-kontext-inpaint"),
    ("tiny_flux_kontext_model", "flux-fill"),
    ("tiny_sd3_model", "chroma-inpaint"),
    ("tiny_chroma_model", "sd-inpaint"),
])
def test_a_declared_family_the_folder_contradicts_is_refused_before_loading(request: pytest.FixtureRequest,
                                                                            fixture: str, declared: str) -> None:
    """These pipelines would load another family's folder with their own class (FluxFillPipeline takes a Kontext
    repo's components): model_index.json decides first."""
    pool = ModelPool(10**11)
    engine = DiffusersEngine(ModelSpec("model", str(request.getfixturevalue(fixture)), family=declared),
                             Registry(), pool, device="cpu")
    with pytest.raises(EngineLoadError, match=f"not of family '{declared}'"):
        engine.load()
    assert pool.keys() == [] and not engine.info().available


def test_a_plain_flux_model_declared_flux_fill_is_refused_when_it_loads(tiny_flux_dev_model: Path,
                                                                        tiny_flux_fill_model: Path) -> None:
    """FluxFillPipeline loads FLUX.1 [dev]'s folder (model_index.json FluxPipeline, of no family of ours) without a
    word, and its 64-channel transformer then failed at the first step with a matrix-shape error."""
    pool = ModelPool(10**11)
    engine = DiffusersEngine(ModelSpec("dev", str(tiny_flux_dev_model), family="flux-fill"), Registry(), pool,
                             device="cpu")
    with pytest.raises(EngineLoadError, match=r"not a FLUX\.1 Fill model: its transformer takes 64 input channels, "
                                              r"where flux-fill needs 384 .* black-forest-labs/FLUX\.1-Fill-dev"):
        engine.load()
    assert pool.keys() == [] and not engine.info().available
    fill = DiffusersEngine(ModelSpec("fill", str(tiny_flux_fill_model), family="flux-fill"), Registry(), pool,
                           device="cpu")
    fill.load()  # the real Fill layout passes the same check
    assert pool.keys() == [fill.base_key]


def generate(engine: DiffusersEngine, **fields: Any) -> np.ndarray:
    """One variant of :func:`test_families.job` (seed 5, a prompt) through check, prepare and inpaint, H×W×3 uint8;
    the progress reports are the steps prepare counted."""
    variant = job(5, **{"prompt": "a red balloon", "num_inference_steps": 3, **fields})
    engine.check(variant)
    total = engine.prepare(variant)
    reports: list[tuple[int, int]] = []
    out = engine.inpaint(variant, lambda step, steps: reports.append((step, steps)), lambda: False)
    assert reports == [(step, total) for step in range(1, total + 1)]
    return out


@pytest.mark.parametrize("fixture", ["tiny_flux_fill_model", "tiny_flux_kontext_model"])
def test_a_flux_lora_changes_the_fill_and_goes_off_again(request: pytest.FixtureRequest, tiny_sd_lora: Path,
                                                         tiny_flux_lora: Path, fixture: str) -> None:
    engine = DiffusersEngine(ModelSpec("flux", str(request.getfixturevalue(fixture))),
                             registry(tiny_sd_lora, tiny_flux_lora), ModelPool(10**11), device="cpu")
    _, mask = astronaut_crop()
    plain = generate(engine)
    with_lora = generate(engine, loras={"flux-lora": 1.0})
    assert np.abs(with_lora[mask == 255].astype(int) - plain[mask == 255]).mean() > 0.5
    np.testing.assert_array_equal(generate(engine), plain)  # no LoRA asked: the model's own output again
    with pytest.raises(ProtocolError, match="made for sd models") as caught:
        engine.check(job(1, loras={"sd-lora": 1.0}))
    assert caught.value.code is ErrorCode.INCOMPATIBLE


@pytest.mark.parametrize(("steps", "strength", "expected"), [(3, 1.0, 3), (3, 0.5, 2), (4, 0.3, 2), (10, 0.25, 3)])
def test_a_strength_runs_the_steps_the_flow_pipelines_run(tiny_sd3_model: Path, steps: int, strength: float,
                                                          expected: int) -> None:
    """``get_timesteps`` of these pipelines skips ``int(steps − steps × strength)`` steps: 3 at 0.5 run 2, where
    the SD pipelines run ``int(3 × 0.5)`` = 1; :func:`generate` checks that the progress reports are the count."""
    engine = DiffusersEngine(ModelSpec("sd3", str(tiny_sd3_model)), Registry(), ModelPool(10**11), device="cpu")
    generate(engine, num_inference_steps=steps, strength=strength)
    assert engine.prepare(job(1, num_inference_steps=steps, strength=strength)) == expected


@pytest.fixture(scope="module")
def tiny_16_channel_autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ``AutoencoderTiny`` for 16-channel latents (TAESD3's and TAEF1's layout, 8 channels a
    block), saved as the hub's madebyollin/taef1 is."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-taef1") / "taef1"
    AutoencoderTiny(latent_channels=16, encoder_block_out_channels=(8, 8, 8, 8),
                    decoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 1, 1, 1),
                    num_decoder_blocks=(1, 1, 1, 1)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("fixture", ["tiny_sd3_model", "tiny_flux_fill_model", "tiny_flux_kontext_model"])
def test_previews_decode_the_latents_or_are_off(request: pytest.FixtureRequest, tiny_16_channel_autoencoder: Path,
                                                fixture: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A named 16-channel tiny autoencoder decodes each step's latents (FLUX.1's packed tokens unpacked first) at
    the model's size, 128×96 for the 120×96 crop; ``auto``, with no TAESD cached, maps them linearly at the latents'
    16×12; ``off`` shows none."""
    folder = request.getfixturevalue(fixture)
    image, mask = astronaut_crop()
    monkeypatch.setattr(previews, "cached_folder", lambda model, index_file: None)  # no TAESD cached
    for setting, expected in ((str(tiny_16_channel_autoencoder), [(96, 128, 3)] * 3), ("auto", [(12, 16, 3)] * 3),
                              ("off", [])):
        engine = DiffusersEngine(ModelSpec("model", str(folder), previews=setting), Registry(), ModelPool(10**11),
                                 device="cpu")
        shown: list[tuple[int, ...]] = []
        variant = EngineJob(image, mask, job(2, prompt="a red balloon", num_inference_steps=3).options, 2,
                            previews=Previews(lambda step: True, lambda step, rgb, seen=shown: seen.append(rgb.shape)))
        engine.inpaint(variant, lambda step, total: None, lambda: False)
        assert shown == expected, setting
