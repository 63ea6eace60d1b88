"""Quantization chosen by memory: the registry's keys, the pure decision (daemon.quantization), the pool's count
of quantized weights, and a GGUF-quantized tiny model loaded and run through the daemon's real loading code."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from gimp_inpaint.daemon.config import ConfigError, load_settings
from gimp_inpaint.daemon.pool import ModelPool, component_bytes, tensor_bytes
from gimp_inpaint.daemon.quantization import (
    NF4_BYTES_PER_PARAMETER,
    Capabilities,
    ModelSizes,
    QuantizationChoice,
    choose_quantization,
    label,
    model_sizes,
    refusal,
    safetensors_elements,
)
from gimp_inpaint.daemon.registry import ModelSpec
from gimp_inpaint.protocol import Error, ErrorCode, Result
from test_diffusers_engine import astronaut_job, make_engine, request_for, run_request, whole_crop
from test_pool import FakeTensor

GB = 10**9


# --- the registry's keys ---

def test_quantization_keys_in_daemon_toml(tmp_path: Path) -> None:
    (tmp_path / "daemon.toml").write_text(
        '[models.plain]\nmodel = "a/b"\n'
        '[models.small]\nmodel = "a/b"\nquantization = "nf4"\n'
        '[models.file]\nmodel = "a/b"\nquantization = "gguf"\ngguf = "~/q/flux-Q4_K_S.gguf"\n')
    models = load_settings(tmp_path).models
    assert (models["plain"].quantization, models["plain"].gguf) == ("auto", "")
    assert models["small"].quantization == "nf4"
    assert (models["file"].quantization, models["file"].gguf) == ("gguf", "~/q/flux-Q4_K_S.gguf")


@pytest.mark.parametrize(("table", "words"), [
    ('quantization = "int4"\n', "quantization = 'int4' is not one of auto, none, nf4, int8, fp8, gguf"),
    ('quantization = 4\n', "quantization must be a str"),
    ('quantization = "gguf"\n', 'quantization = "gguf" needs the GGUF file'),
    ('gguf = "t.gguf"\n', "a gguf file goes with quantization = \"gguf\" (it is 'auto')"),
    ('quantization = "nf4"\ngguf = "t.gguf"\n', "a gguf file goes with quantization = \"gguf\" (it is 'nf4')"),
    ('quantization = "gguf"\ngguf = "t.safetensors"\n', "must name a .gguf file"),
])
def test_bad_quantization_keys_are_refused_naming_the_table(tmp_path: Path, table: str, words: str) -> None:
    (tmp_path / "daemon.toml").write_text(f'[models.x]\nmodel = "a/b"\n{table}')
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path)
    assert words in str(error.value) and "[models.x]" in str(error.value)


def test_a_single_file_takes_no_quantization(tmp_path: Path) -> None:
    (tmp_path / "daemon.toml").write_text('[models.x]\nmodel = "~/m.safetensors"\nquantization = "nf4"\n')
    with pytest.raises(ConfigError, match="a single-file checkpoint takes auto or none"):
        load_settings(tmp_path)


def test_the_pool_key_tells_quantizations_of_one_model_apart() -> None:
    keys = {make_engine(name, "a/b", quantization=quantization, gguf=gguf).base_key
            for name, quantization, gguf in [("x", "auto", ""), ("y", "nf4", ""), ("z", "gguf", "q.gguf")]}
    assert keys == {"source:a/b::auto", "source:a/b::auto:nf4:", "source:a/b::auto:gguf:q.gguf"}


# --- the pure decision ---

CUDA = Capabilities("cuda", (8, 6), bitsandbytes=True)
CUDA_PLAIN = Capabilities("cuda", (8, 6))
FLUX = ModelSizes(denoiser=12 * GB, text_encoders=(123_000_000, 4_760_000_000), other=84_000_000)
"""FLUX.1 Fill's parameters: a 12 B transformer, CLIP-L and T5-XXL, the VAE."""
KLEIN = ModelSizes(denoiser=3_880_000_000, text_encoders=(4_020_000_000,), other=84_000_000)
"""FLUX.2 klein 4B's: its transformer (bench/gpu.py's config), Qwen3 4B, the VAE."""


@pytest.mark.parametrize(("sizes", "budget", "caps", "expected"), [
    (FLUX, 80 * GB, CUDA, ("none", "", True)),             # bf16 fits an H100's budget
    (FLUX, 19 * GB, CUDA, ("nf4", "", False)),              # 24 GB card: NF4 transformer 6.75 + T5 9.8 fit
    (FLUX, 12 * GB, CUDA, ("nf4", "model", False)),         # 16 GB card: NF4 with the VAE fit, encoders take turns
    (FLUX, 12 * GB, CUDA_PLAIN, ("none", "group", True)),   # no bitsandbytes, the 24 GB transformer fits nowhere
    (FLUX, 25 * GB, CUDA_PLAIN, ("none", "model", True)),   # no bitsandbytes, the transformer alone fits
    (FLUX, 5 * GB, CUDA, ("none", "group", True)),          # even NF4 (6.75 GB) does not fit
    (KLEIN, 6_900_000_000, CUDA, ("nf4", "", True)),         # 8 GB card: Qwen3's 8 GB fit only as NF4 (4.6 GB in all)
    (KLEIN, 6_900_000_000, CUDA_PLAIN, ("none", "group", True)),  # the same without bitsandbytes
    (FLUX, 12 * GB, Capabilities("cpu"), ("none", "", True)),   # CPU: full precision, whatever the budget
    (FLUX, 12 * GB, Capabilities("mps"), ("none", "", True)),
    (None, 12 * GB, CUDA, ("none", "", True)),               # sizes unknown: place() decides by the loaded bytes
])
def test_auto_decides_by_the_budget(sizes: ModelSizes | None, budget: int, caps: Capabilities,
                                    expected: tuple[str, str, bool]) -> None:
    choice = choose_quantization("auto", sizes, budget, caps, element_bytes=2)
    assert (choice.quantization, choice.offload, choice.text_encoders) == expected
    assert choice.reason


def test_nf4_size_estimate_is_4_bits_and_a_float32_absmax_per_64() -> None:
    assert NF4_BYTES_PER_PARAMETER == 0.5625
    sizes = ModelSizes(denoiser=1000, other=0)  # NF4: 562 bytes; float16: 2000
    assert choose_quantization("auto", sizes, 562, CUDA, element_bytes=2).quantization == "nf4"
    assert choose_quantization("auto", sizes, 561, CUDA, element_bytes=2).offload == "group"


@pytest.mark.parametrize("requested", ["none", "nf4", "int8", "fp8", "gguf"])
def test_an_explicit_quantization_is_kept(requested: str) -> None:
    choice = choose_quantization(requested, FLUX, 1, Capabilities("cpu"), element_bytes=4)
    assert (choice.quantization, choice.offload, choice.text_encoders) == (requested, "", True)


@pytest.mark.parametrize(("quantization", "caps", "words"), [
    ("nf4", Capabilities("cpu", bitsandbytes=True), "nf4 needs bitsandbytes and a CUDA GPU: pip install bitsandbytes"),
    ("nf4", Capabilities("cuda", (9, 0)), "nf4 needs bitsandbytes and a CUDA GPU: pip install bitsandbytes"),
    ("int8", Capabilities("cuda", (9, 0)), "int8 needs torchao: pip install torchao"),
    ("fp8", Capabilities("cuda", (9, 0)), "fp8 needs torchao: pip install torchao"),
    ("fp8", Capabilities("cuda", (8, 6), torchao=True), "compute capability 8.9 or newer (Ada, Hopper; here: "
                                                        "compute capability 8.6)"),
    ("fp8", Capabilities("cpu", torchao=True), "here: no CUDA GPU"),
    ("gguf", Capabilities("cuda", (9, 0)), "gguf needs the gguf package: pip install gguf"),
])
def test_refusal_says_what_to_install(quantization: str, caps: Capabilities, words: str) -> None:
    assert words in refusal(quantization, caps)


@pytest.mark.parametrize(("quantization", "caps"), [
    ("auto", Capabilities("cpu")), ("none", Capabilities("cpu")), ("nf4", CUDA),
    ("int8", Capabilities("cpu", torchao=True)), ("fp8", Capabilities("cuda", (8, 9), torchao=True)),
    ("gguf", Capabilities("cpu", gguf=True))])
def test_what_can_run_is_not_refused(quantization: str, caps: Capabilities) -> None:
    assert refusal(quantization, caps) == ""


def test_label_adds_offload() -> None:
    assert (label("nf4", True), label("none", False)) == ("nf4+offload", "none")


# --- sizes before loading: safetensors headers ---

def write_header(path: Path, tensors: dict[str, list[int]], dtype: str = "F16") -> None:
    """A safetensors file's header (and no data: only the header is read)."""
    header = json.dumps({"__metadata__": {"format": "pt"},
                         **{name: {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]}
                            for name, shape in tensors.items()}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def test_model_sizes_reads_the_headers_of_the_files_diffusers_loads(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxFillPipeline", "_diffusers_version": "0.42.1", "transformer": ["diffusers", "X"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "image_encoder": [None, None]}))
    for shard in (1, 2):  # a sharded transformer, with an fp16 variant beside it
        write_header(tmp_path / f"transformer/diffusion_pytorch_model-0000{shard}-of-00002.safetensors",
                     {"a": [10, 10], "b": [5]}, "F32")
        write_header(tmp_path / f"transformer/diffusion_pytorch_model-0000{shard}-of-00002.fp16.safetensors",
                     {"a": [10, 10], "b": [5]})
    write_header(tmp_path / "text_encoder/model.safetensors", {"w": [3, 4]})
    write_header(tmp_path / "text_encoder_2/model.safetensors", {"w": [7]})
    write_header(tmp_path / "vae/diffusion_pytorch_model.safetensors", {"w": [2, 2, 2]})
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "vocab.json").write_text("{}")
    assert safetensors_elements(tmp_path / "text_encoder/model.safetensors") == 12
    assert model_sizes(tmp_path) == ModelSizes(denoiser=210, text_encoders=(12, 7), other=8)
    assert model_sizes(tmp_path, "fp16") == model_sizes(tmp_path)
    (tmp_path / "vae" / "config.json").write_text("{}")
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").rename(tmp_path / "vae" / "x.bin")
    assert model_sizes(tmp_path) is None  # a model without safetensors: unknown
    assert model_sizes(tmp_path / "nothing") is None


# --- the pool counts quantized weights at their size ---

class Packed:
    """A bitsandbytes ``Params4bit`` stand-in: packed uint8 data and a quant_state with a nested one."""

    def __init__(self) -> None:
        self.quant_state = SimpleNamespace(absmax=FakeTensor(16, 1), code=FakeTensor(256, 4), offset=None,
                                           state2=SimpleNamespace(absmax=FakeTensor(1, 4), code=FakeTensor(256, 4)))

    def numel(self) -> int:
        return 512  # 1024 weights, two a byte

    def element_size(self) -> int:
        return 1


class Wrapper:
    """A torchao-style wrapper tensor: logically 1024 bfloat16 weights, held as int8 data and float32 scales."""

    qdata, scale = FakeTensor(1024, 1), FakeTensor(32, 4)

    def __tensor_flatten__(self) -> tuple[list[str], Any]:
        return ["qdata", "scale"], None

    def numel(self) -> int:
        return 1024

    def element_size(self) -> int:
        return 2


def test_tensor_bytes_counts_quantized_storage() -> None:
    assert tensor_bytes(FakeTensor(1024, 2)) == 2048
    assert tensor_bytes(Packed()) == 512 + 16 + 1024 + 4 + 1024
    assert tensor_bytes(Wrapper()) == 1024 + 128


@pytest.mark.diffusers
def test_a_gguf_parameter_counts_its_blocks() -> None:
    gguf = pytest.importorskip("gguf")
    torch = pytest.importorskip("torch")
    from diffusers.quantizers.gguf.utils import GGUFParameter

    weights = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    blocks = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
    parameter = GGUFParameter(torch.from_numpy(blocks), quant_type=gguf.GGMLQuantizationType.Q8_0)
    assert tensor_bytes(parameter) == 64 * 64 // 32 * 34  # Q8_0: 32 int8 weights and a float16 scale a block


# --- GGUF for real, on the CPU ---

@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny SD inpainting pipeline and its UNet as a Q8_0 GGUF file (tests/tiny_quantized.py)."""
    for module in ("torch", "diffusers", "gguf"):
        pytest.importorskip(module)
    from tiny_quantized import build_tiny_gguf_inpaint

    return build_tiny_gguf_inpaint(tmp_path_factory.mktemp("tiny-gguf"))


@pytest.mark.diffusers
def test_a_gguf_model_loads_and_runs_through_the_daemon(tiny_gguf: tuple[Path, Path]) -> None:
    folder, gguf_path = tiny_gguf
    engine = make_engine("tiny", str(folder), device="cpu", quantization="gguf", gguf=str(gguf_path))
    assert engine.info().quantization == ""  # before it loads
    job = astronaut_job(num_inference_steps=3)
    request = request_for(job, seed=5, grow=2, feather=4)
    result, variants = run_request(request, engine)
    assert result == Result(job_id="j1", num_variants=1), result
    assert engine.info().quantization == "gguf"
    unet = engine.pipeline.unet
    assert type(unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q).__name__ == "GGUFLinear"
    image, blend = whole_crop(variants[0], request)
    rgba = np.dstack([job.image, np.full(job.image.shape[:2], 255, np.uint8)])
    assert image.shape == rgba.shape
    np.testing.assert_array_equal(image[blend == 0], rgba[blend == 0])

    full = make_engine("tiny", str(folder), device="cpu", quantization="none")
    full_image, _ = whole_crop(run_request(request, full)[1][0], request)
    other_seed, _ = whole_crop(run_request(request_for(job, seed=6, grow=2, feather=4), full)[1][0], request)
    assert full.info().quantization == "none"
    repainted = blend > 0
    gguf_error = np.abs(image[repainted].astype(int) - full_image[repainted]).mean()
    seed_difference = np.abs(other_seed[repainted].astype(int) - full_image[repainted]).mean()
    assert gguf_error < seed_difference / 4  # Q8_0 weights: the picture of the same seed, not another one


@pytest.mark.diffusers
def test_a_gguf_model_counts_less_and_fits_a_budget_the_full_one_does_not(tiny_gguf: tuple[Path, Path]) -> None:
    folder, gguf_path = tiny_gguf
    quantized = make_engine("q", str(folder), device="cpu", quantization="gguf", gguf=str(gguf_path))
    full = make_engine("f", str(folder), device="cpu", quantization="none")
    quantized.load()
    full.load()
    small, large = (sum(component_bytes(engine.pipeline).values()) for engine in (quantized, full))
    assert small < large
    unet_sizes = [component_bytes(engine.pipeline.unet) for engine in (quantized, full)]
    assert sum(unet_sizes[0].values()) < 0.75 * sum(unet_sizes[1].values())
    budget = (small + large) // 2
    pool = ModelPool(budget, release=lambda: None)
    for engine in (quantized, full):
        engine.pool = pool
        engine.unload()
    quantized.load()
    assert pool.used_bytes() == small <= pool.budget_bytes
    full.load()  # over the budget with the quantized one: that one is evicted, the full one alone is still over
    assert pool.keys() == [full.base_key] and pool.used_bytes() == large > budget


@pytest.mark.diffusers
def test_a_gguf_flux_transformer_loads_quantized_and_computes_as_the_float_one(tmp_path: Path) -> None:
    for module in ("diffusers", "gguf"):
        pytest.importorskip(module)
    import torch
    from diffusers import FluxTransformer2DModel
    from gimp_inpaint.daemon.engines.loading import quantization_kwargs, quantization_of
    from tiny_quantized import FLUX_TRANSFORMER, build_tiny_flux_transformer

    folder, gguf_path = build_tiny_flux_transformer(tmp_path)
    quantized = quantization_kwargs(QuantizationChoice("gguf"), folder, torch.float32, str(gguf_path))["transformer"]
    assert type(quantized.transformer_blocks[0].attn.to_q).__name__ == "GGUFLinear"
    assert quantization_of(SimpleNamespace(components={"transformer": quantized})) == "gguf"
    full = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    assert sum(component_bytes(quantized).values()) < 0.5 * sum(component_bytes(full).values())
    generator = torch.Generator().manual_seed(1)
    tokens, text = 16, 8
    inputs = {"hidden_states": torch.randn(1, tokens, FLUX_TRANSFORMER["in_channels"], generator=generator),
              "encoder_hidden_states": torch.randn(1, text, 32, generator=generator),
              "pooled_projections": torch.randn(1, 32, generator=generator), "timestep": torch.tensor([0.5]),
              "guidance": torch.tensor([3.5]), "img_ids": torch.zeros(tokens, 3), "txt_ids": torch.zeros(text, 3)}
    with torch.inference_mode():
        expected, got = (model(**inputs).sample for model in (full, quantized))
    assert got.shape == expected.shape == (1, tokens, FLUX_TRANSFORMER["out_channels"])
    error = (got - expected).abs().mean() / expected.abs().mean()
    assert 0 < error < 0.02  # Q8_0: a few thousandths off, not the float weights themselves


@pytest.mark.diffusers
@pytest.mark.parametrize(("quantization", "words"), [
    ("nf4", "nf4 needs bitsandbytes and a CUDA GPU: pip install bitsandbytes"),
    ("int8", "int8 needs torchao: pip install torchao"),
    ("fp8", "fp8 needs torchao: pip install torchao"),
])
def test_backends_missing_here_are_refused_up_front(tiny_inpaint_model: Path, quantization: str,
                                                    words: str) -> None:
    for module in ("bitsandbytes", "torchao"):
        if __import__("importlib").util.find_spec(module) is not None:
            pytest.skip(f"{module} is installed")
    engine = make_engine("tiny", str(tiny_inpaint_model), device="cpu", quantization=quantization)
    error, variants = run_request(request_for(astronaut_job()), engine)
    assert isinstance(error, Error) and variants == []
    assert error.code is ErrorCode.ENGINE_UNAVAILABLE and words in error.message
    assert engine.pool.load_counts == {}  # nothing loaded
    assert words in engine.info().detail


@pytest.mark.diffusers
def test_auto_on_the_cpu_loads_at_full_precision(tiny_inpaint_model: Path) -> None:
    engine = make_engine("tiny", str(tiny_inpaint_model), device="cpu")
    engine.load()
    assert engine.info().quantization == "none"


@pytest.mark.diffusers
def test_nf4_quantizes_the_denoiser_and_as_asked_the_text_encoders(tiny_inpaint_model: Path) -> None:
    torch = pytest.importorskip("torch")
    from gimp_inpaint.daemon.engines.loading import quantization_kwargs

    both = quantization_kwargs(QuantizationChoice("nf4"), tiny_inpaint_model, torch.float16)["quantization_config"]
    assert (both.quant_backend, both.components_to_quantize) == ("bitsandbytes_4bit", ["unet", "text_encoder"])
    assert both.quant_kwargs == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                 "bnb_4bit_compute_dtype": torch.float16}
    denoiser = quantization_kwargs(QuantizationChoice("nf4", text_encoders=False), tiny_inpaint_model,
                                   torch.bfloat16)["quantization_config"]
    assert denoiser.components_to_quantize == ["unet"]
    assert quantization_kwargs(QuantizationChoice("none"), tiny_inpaint_model, torch.float16) == {}


class Recorder:
    """A pipeline stand-in that records the offload calls ``place`` makes."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.components = {"unet": SimpleNamespace(parameters=list, buffers=list)}

    def enable_group_offload(self, **kwargs: Any) -> None:
        self.calls.append(f"group {kwargs['offload_type']}")

    def enable_model_cpu_offload(self, **kwargs: Any) -> None:
        self.calls.append("model")

    def to(self, device: Any) -> None:
        self.calls.append(f"to {device}")

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        pass


@pytest.mark.diffusers
@pytest.mark.parametrize(("offload_as", "size", "calls"), [
    ("", 10, ["to cuda"]), ("", 1000, ["model"]), ("model", 10, ["model"]), ("group", 10, ["group leaf_level"])])
def test_place_offloads_as_the_choice_says(offload_as: str, size: int, calls: list[str]) -> None:
    torch = pytest.importorskip("torch")
    from gimp_inpaint.daemon.engines.loading import place

    pipeline = Recorder()
    offloaded = place(pipeline, torch.device("cuda"), ModelPool(100, release=lambda: None), size=size, keep=[],
                      compile_unet=False, label="x", offload_as=offload_as)
    assert pipeline.calls == calls and offloaded == (calls != ["to cuda"])


def test_model_spec_defaults() -> None:
    assert (ModelSpec("x", "a/b").quantization, ModelSpec("x", "a/b").gguf) == ("auto", "")


def test_status_shows_a_loaded_models_quantization() -> None:
    from gimp_inpaint.client import cli
    from gimp_inpaint.protocol import EngineInfo

    loaded = EngineInfo(name="flux", kind="diffusers", model="a/b", available=True, uses_prompt=True,
                        detail="loaded on cuda:0 (RTX 4070)", quantization="nf4+offload")
    waiting = EngineInfo(name="sd", kind="diffusers", model="c/d", available=True, uses_prompt=True,
                         detail="loads on first use")
    lines = cli.engine_table([loaded, waiting])
    assert lines[1].endswith("available; loaded on cuda:0 (RTX 4070); quantization nf4+offload")
    assert lines[2].endswith("available; loads on first use")


@pytest.mark.diffusers
def test_a_gguf_transformer_of_a_flux_fill_pipeline_runs_through_the_daemon(tiny_flux_fill_model: Path,
                                                                              tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from diffusers import FluxTransformer2DModel
    from tiny_quantized import write_gguf

    transformer = FluxTransformer2DModel.from_pretrained(tiny_flux_fill_model, subfolder="transformer")
    gguf_path = write_gguf(transformer, tmp_path / "fill-Q8_0.gguf")
    engine = make_engine("fill", str(tiny_flux_fill_model), device="cpu", quantization="gguf", gguf=str(gguf_path))
    job = astronaut_job(num_inference_steps=2)
    request = request_for(job, seed=5, grow=2, feather=4, negative_prompt="", guidance_scale=30.0)
    result, variants = run_request(request, engine)
    assert result == Result(job_id="j1", num_variants=1), result
    assert engine.info().quantization == "gguf" and engine.info().family == "flux-fill"
    assert any(type(module).__name__ == "GGUFLinear" for module in engine.pipeline.transformer.modules())
    image, blend = whole_crop(variants[0], request)
    rgba = np.dstack([job.image, np.full(job.image.shape[:2], 255, np.uint8)])
    assert image.shape == rgba.shape
    np.testing.assert_array_equal(image[blend == 0], rgba[blend == 0])
    assert (image[blend > 0] != rgba[blend > 0]).any()  # the quantized transformer painted the hole
