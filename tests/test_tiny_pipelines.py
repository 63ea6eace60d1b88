"""The tiny offline pipelines of tests/tiny_pipelines.py load through the real loading calls the daemon uses and run.

One test per model family: ``AutoPipelineForInpainting.from_pretrained(folder)`` (SD inpainting, plain SD, SDXL
inpainting, Kandinsky 2.2), the SDXL base → refiner chain of diffusers' SDXL guide, ``from_pipe`` with a ControlNet,
``from_single_file`` with a local ``config``, LoRA and textual-inversion loading. Every run: 4 steps at the native
128 px (the UNet's ``sample_size`` × the VAE's scale factor).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_pipelines import (
    DEFAULT_SAMPLE_SIZE,
    EMBEDDING_TOKEN,
    VAE_SCALE_FACTOR,
    build_tiny_sd,
    main,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
Image = pytest.importorskip("PIL.Image")

NATIVE = DEFAULT_SAMPLE_SIZE * VAE_SCALE_FACTOR
"""Every tiny pipeline's native side, 128 pixels."""


def _inputs(height: int = NATIVE, width: int = NATIVE) -> tuple[Any, Any]:
    """A random RGB image and a mask that is white (repaint) on the middle half of each side, both height×width."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255
    return image, Image.fromarray(mask)


def _run(pipeline: Any, seed: int = 0, prompt: str = "a cat", **kwargs: Any) -> Any:
    """Run a 4-step inpainting call on :func:`_inputs` (unless ``kwargs`` bring ``image``/``mask_image``); returns
    ``images`` (float32 N×H×W×3 in [0, 1] for ``output_type="np"``, the default here)."""
    height, width = kwargs.pop("height", NATIVE), kwargs.pop("width", NATIVE)
    image, mask = _inputs(height, width)
    pipeline.set_progress_bar_config(disable=True)
    call = {"image": image, "mask_image": mask, "height": height, "width": width, "output_type": "np", **kwargs}
    return pipeline(prompt=prompt, num_inference_steps=4, generator=torch.Generator().manual_seed(seed),
                    **call).images


def _load(folder: Path) -> Any:
    """The daemon's loading call for a diffusers folder."""
    return diffusers.AutoPipelineForInpainting.from_pretrained(folder)


@pytest.mark.parametrize(("fixture", "pipeline_class", "in_channels"), [
    ("tiny_inpaint_model", "StableDiffusionInpaintPipeline", 9),
    ("tiny_sd_model", "StableDiffusionInpaintPipeline", 4),
    ("tiny_sdxl_inpaint_model", "StableDiffusionXLInpaintPipeline", 9),
])
def test_sd_and_sdxl_folders_load_as_inpainting_pipelines_and_run_at_native_size(
        request: pytest.FixtureRequest, fixture: str, pipeline_class: str, in_channels: int) -> None:
    pipeline = _load(request.getfixturevalue(fixture))

    assert type(pipeline).__name__ == pipeline_class
    assert pipeline.unet.config.in_channels == in_channels
    assert pipeline.unet.config.sample_size * pipeline.vae_scale_factor == NATIVE
    images = _run(pipeline)
    assert images.shape == (1, NATIVE, NATIVE, 3)
    assert np.isfinite(images).all()
    assert images.std() > 0.01  # not a flat image


def test_sdxl_inpaint_model_is_shaped_like_the_real_one(tiny_sdxl_inpaint_model: Path) -> None:
    pipeline = _load(tiny_sdxl_inpaint_model)

    assert pipeline.config.requires_aesthetics_score is False
    assert pipeline.config.force_zeros_for_empty_prompt is True
    assert type(pipeline.text_encoder).__name__ == "CLIPTextModel"
    assert type(pipeline.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipeline.unet.config.addition_embed_type == "text_time"


def _config(folder: Path) -> dict[str, Any]:
    """A component's config.json without the fields that name the file's origin."""
    return {key: value for key, value in json.loads((folder / "config.json").read_text()).items()
            if key not in ("_name_or_path", "_diffusers_version", "transformers_version")}


def test_sdxl_refiner_shares_vae_and_text_encoder_2_and_refines_the_base_latents(
        tiny_sdxl_inpaint_model: Path, tiny_sdxl_refiner_model: Path) -> None:
    for component in ("vae", "text_encoder_2"):
        assert _config(tiny_sdxl_refiner_model / component) == _config(tiny_sdxl_inpaint_model / component)
    base = _load(tiny_sdxl_inpaint_model)
    # diffusers' SDXL guide, inpainting + refiner: the refiner repo loaded into the *inpainting* class
    refiner = diffusers.StableDiffusionXLInpaintPipeline.from_pretrained(
        tiny_sdxl_refiner_model, text_encoder_2=base.text_encoder_2, vae=base.vae)

    assert refiner.text_encoder is None and refiner.tokenizer is None
    assert refiner.text_encoder_2 is base.text_encoder_2 and refiner.vae is base.vae
    assert refiner.config.requires_aesthetics_score is True
    assert refiner.unet.config.in_channels == 4
    latents = _run(base, denoising_end=0.7, output_type="latent")
    assert tuple(latents.shape) == (1, 4, DEFAULT_SAMPLE_SIZE, DEFAULT_SAMPLE_SIZE)
    images = _run(refiner, image=latents, mask_image=_inputs()[1], denoising_start=0.7)
    assert images.shape == (1, NATIVE, NATIVE, 3)
    assert np.isfinite(images).all()


def test_kandinsky22_loads_as_the_combined_pipeline_and_sizes_round_to_64(
        tiny_kandinsky22_inpaint_model: Path) -> None:
    pipeline = _load(tiny_kandinsky22_inpaint_model)

    assert type(pipeline).__name__ == "KandinskyV22InpaintCombinedPipeline"
    assert pipeline.unet.config.sample_size * pipeline.decoder_pipe.movq_scale_factor == NATIVE
    for height, width in ((NATIVE, NATIVE), (128, 192)):
        images = _run(pipeline, height=height, width=width, prior_num_inference_steps=4)
        assert images.shape == (1, height, width, 3)
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        _run(pipeline, height=100, width=100, prior_num_inference_steps=4)  # not a multiple of 64


def test_kandinsky22_repaints_the_white_part_of_the_mask(tiny_kandinsky22_inpaint_model: Path) -> None:
    pipeline = _load(tiny_kandinsky22_inpaint_model)

    first, second = (_run(pipeline, seed, output_type="latent", prior_num_inference_steps=4)[0] for seed in (0, 1))
    changed = (first - second).abs().amax(0)  # latent 16×16; the mask is white on latent rows/columns 4..11
    assert changed[5:11, 5:11].min() > 0  # the seed decides what is painted there
    border = torch.ones_like(changed, dtype=torch.bool)
    border[3:13, 3:13] = False
    assert changed[border].max() == 0  # the black part keeps the image's latents


def test_kandinsky22_decoder_folder_finds_its_prior_through_the_readme(
        tiny_kandinsky22_inpaint_model: Path, tmp_path: Path) -> None:
    """The hub layout: a decoder repo whose README.md front matter names the prior repo (``_load_connected_pipes``);
    a local folder path there loads offline."""
    combined = _load(tiny_kandinsky22_inpaint_model)
    combined.decoder_pipe.save_pretrained(tmp_path / "decoder")
    combined.prior_pipe.save_pretrained(tmp_path / "prior")
    (tmp_path / "decoder" / "README.md").write_text(f"---\nprior:\n- {tmp_path / 'prior'}\n---\n", encoding="utf-8")

    pipeline = _load(tmp_path / "decoder")

    assert json.loads((tmp_path / "decoder" / "model_index.json").read_text())["_class_name"] == (
        "KandinskyV22InpaintPipeline")
    assert type(pipeline).__name__ == "KandinskyV22InpaintCombinedPipeline"
    np.testing.assert_array_equal(_run(pipeline, prior_num_inference_steps=4),
                                  _run(combined, prior_num_inference_steps=4))


def make_inpaint_condition(image: Any, mask: Any) -> Any:
    """ControlNet inpainting's control image (diffusers' ControlNet guide): RGB in [0, 1], masked pixels -1,
    1×3×H×W float32."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    pixels[np.asarray(mask.convert("L"), dtype=np.float32) / 255.0 > 0.5] = -1.0
    return torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy())


def test_controlnet_joins_the_plain_sd_pipeline_with_from_pipe(tiny_sd_model: Path,
                                                                tiny_controlnet_model: Path) -> None:
    sd = _load(tiny_sd_model)
    controlnet = diffusers.ControlNetModel.from_pretrained(tiny_controlnet_model)
    pipeline = diffusers.StableDiffusionControlNetInpaintPipeline.from_pipe(sd, controlnet=controlnet)
    control_image = make_inpaint_condition(*_inputs())

    assert pipeline.unet is sd.unet
    full = _run(pipeline, control_image=control_image)
    assert full.shape == (1, NATIVE, NATIVE, 3)
    off = _run(pipeline, control_image=control_image, controlnet_conditioning_scale=0.0)
    np.testing.assert_array_equal(off, _run(sd))  # scale 0: the plain SD pipeline
    assert np.abs(full - off).max() > 0.01
    loaded = diffusers.StableDiffusionControlNetInpaintPipeline.from_pretrained(tiny_sd_model, controlnet=controlnet)
    np.testing.assert_array_equal(_run(loaded, control_image=control_image), full)


@pytest.mark.parametrize("pipeline_class", ["StableDiffusionPipeline", "StableDiffusionInpaintPipeline"])
def test_single_file_checkpoint_loads_offline_with_the_same_weights(
        tiny_sd_single_file: Path, tiny_sd_model: Path, pipeline_class: str) -> None:
    reference = diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd_model)

    pipeline = getattr(diffusers, pipeline_class).from_single_file(tiny_sd_single_file, config=str(tiny_sd_model))

    assert type(pipeline).__name__ == pipeline_class
    for name in ("unet", "vae", "text_encoder"):
        loaded, expected = getattr(pipeline, name).state_dict(), getattr(reference, name).state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[key], expected[key]) for key in expected), name
    if pipeline_class == "StableDiffusionInpaintPipeline":
        assert _run(pipeline).shape == (1, NATIVE, NATIVE, 3)


def test_single_file_checkpoint_has_the_original_ldm_layout(tiny_sd_single_file: Path) -> None:
    from safetensors import safe_open

    with safe_open(tiny_sd_single_file, "pt") as checkpoint:
        keys = set(checkpoint.keys())
        attention = checkpoint.get_tensor("first_stage_model.encoder.mid.attn_1.q.weight")
    assert {key.split(".")[0] for key in keys} == {"model", "first_stage_model", "cond_stage_model"}
    assert {"model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.middle_block.1.proj_in.weight",
            "model.diffusion_model.output_blocks.1.2.conv.weight", "model.diffusion_model.out.2.weight",
            "first_stage_model.decoder.up.3.block.0.conv1.weight",
            "first_stage_model.encoder.down.0.downsample.conv.weight",
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"} <= keys
    assert attention.ndim == 4  # LDM's VAE attention is 1×1 convolutions


def test_sd_lora_changes_the_inpainting_output_and_an_sdxl_lora_does_not_fit(
        tiny_inpaint_model: Path, tiny_sd_lora: Path, tiny_sdxl_lora: Path) -> None:
    pipeline = _load(tiny_inpaint_model)
    plain = _run(pipeline)

    pipeline.load_lora_weights(tiny_sd_lora, adapter_name="x")
    pipeline.set_adapters(["x"], adapter_weights=[1.0])
    assert np.abs(_run(pipeline) - plain).max() > 0.01
    pipeline.set_adapters(["x"], adapter_weights=[0.0])
    np.testing.assert_array_equal(_run(pipeline), plain)
    with pytest.raises(RuntimeError, match="size mismatch"):
        pipeline.load_lora_weights(tiny_sdxl_lora, adapter_name="xl")
    assert pipeline.get_list_adapters() == {"unet": ["x"], "text_encoder": ["x"]}


def test_sdxl_lora_changes_the_sdxl_output(tiny_sdxl_inpaint_model: Path, tiny_sdxl_lora: Path) -> None:
    pipeline = _load(tiny_sdxl_inpaint_model)
    plain = _run(pipeline)

    pipeline.load_lora_weights(tiny_sdxl_lora, adapter_name="x")
    pipeline.set_adapters(["x"])

    assert np.abs(_run(pipeline) - plain).max() > 0.01


def test_embedding_adds_one_token_that_changes_the_output(tiny_inpaint_model: Path,
                                                          tiny_sd_embedding: tuple[Path, str]) -> None:
    from safetensors.torch import load_file

    path, token = tiny_sd_embedding
    pipeline = _load(tiny_inpaint_model)
    prompt = f"a {token}"
    spelled_out = _run(pipeline, prompt=prompt)  # the token is still a string of characters here

    pipeline.load_textual_inversion(path, token=token)

    assert token == EMBEDDING_TOKEN
    token_id = pipeline.tokenizer.convert_tokens_to_ids(token)
    assert pipeline.tokenizer(prompt).input_ids[2:-1] == [token_id]  # <start>, "a</w>", the token, <end>
    vector = load_file(path)[token]
    assert torch.equal(pipeline.text_encoder.get_input_embeddings().weight[token_id], vector[0])
    assert np.abs(_run(pipeline, prompt=prompt) - spelled_out).max() > 0.01


def test_builds_are_deterministic(tiny_sd_model: Path, tmp_path: Path) -> None:
    again = build_tiny_sd(tmp_path / "sd")

    for weights in sorted(tiny_sd_model.rglob("*.safetensors")):
        assert (again / weights.relative_to(tiny_sd_model)).read_bytes() == weights.read_bytes()


def test_cli_builds_the_family_it_is_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "lora"), "--family", "sd-lora"]) == 0

    assert Path(capsys.readouterr().out.strip()) == tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x"), "--family", "sd", "--sample-size", "8"])
