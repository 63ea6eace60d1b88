"""GPU benchmark (issue 13): full-size denoisers with random weights, each way of holding them side by side.

    .venv/bin/python bench/gpu.py [--repeat N] [--only ARCH ...] [--setups SETUP ...]
    .venv/bin/python bench/gpu.py --smoke      # tiny sizes on the CPU: checks that it runs, measures nothing

The architectures are built from their configs, written below (no download, random weights), and run at their
native resolution, one request = ``steps`` denoiser calls of the batch their pipeline runs:

- ``sd15``: the SD 1.5 inpainting UNet (9 input channels), 512² (64² latents), batch 2 (classifier-free guidance),
  20 steps, float16;
- ``sdxl``: the SDXL inpainting UNet, 1024² (128² latents), batch 2, 20 steps, float16;
- ``flux2-klein-4b``: the FLUX.2 klein 4B transformer (5 double and 20 single blocks, 3072 wide, Qwen3-4B's 7680-wide
  context; 4 B parameters), 1024² (4096 image tokens, 512 text tokens), batch 1 (guidance-distilled), 4 steps,
  bfloat16.

The setups (``--setups`` takes these names):

- ``sdpa``: the dtype above on the GPU, PyTorch's scaled-dot-product attention (diffusers' default processor): how
  the daemon runs a model that fits;
- ``compile``: the same after ``torch.compile`` of the model (the first request compiles, untimed);
- ``nf4``: bitsandbytes 4-bit NormalFloat through diffusers' ``BitsAndBytesConfig`` (saved and loaded again with
  ``from_pretrained``, as the daemon's loader does);
- ``int8`` and ``fp8``: torchao's ``Int8WeightOnlyConfig`` and ``Float8WeightOnlyConfig`` in diffusers'
  ``TorchAoConfig`` (fp8 needs compute capability ≥ 8.9);
- ``gguf``: the model written as a Q8_0 GGUF file (``tests/tiny_quantized.py``'s writer) and loaded with
  ``from_single_file(..., quantization_config=GGUFQuantizationConfig)``;
- ``guide-offload``: the diffusers guide's default for a model that does not fit, the dtype above with
  ``enable_model_cpu_offload``, here accelerate's ``cpu_offload_with_hook`` (what that method installs): each request
  moves the model onto the GPU and back to RAM after it, as it happens when the text encoders and the VAE run in
  between.

Each setup: one warm-up request, then ``--repeat`` (default 3) timed ones (``torch.cuda.synchronize`` around each),
the median and every sample; peak memory is ``torch.cuda.max_memory_allocated`` from the model's load to the last
request (reset before each setup). A setup whose package or GPU is missing is reported as not run, with why. Results:
``bench/results/gpu-<UTC date-time>.md`` (date, versions, device); ``--smoke`` writes ``gpu-<date>-smoke.md``, marked
as a CPU smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from speed import ROOT, machine, versions

RESULTS = ROOT / "bench" / "results"
SETUPS = ("sdpa", "compile", "nf4", "int8", "fp8", "gguf", "guide-offload")


@dataclass(frozen=True)
class Architecture:
    """A denoiser to time: its diffusers class, its config at full size and at smoke size, how a request calls it.

    Attributes:
        name: its ``--only`` name.
        model_class: the diffusers class (``UNet2DConditionModel``, ``Flux2Transformer2DModel``).
        config, smoke_config: ``from_config`` arguments (the released model's, and a tiny one).
        dtype: the torch dtype name the guides run it in.
        steps: denoiser calls per request.
        inputs: ``(config, batch, device, dtype) -> forward keyword arguments`` at the native resolution.
        batch: the batch a pipeline calls it with (2 with classifier-free guidance).
    """

    name: str
    model_class: str
    config: dict[str, Any]
    smoke_config: dict[str, Any]
    dtype: str
    steps: int
    inputs: Callable[[dict[str, Any], int, Any, Any], dict[str, Any]]
    batch: int


def unet_inputs(config: dict[str, Any], batch: int, device: Any, dtype: Any) -> dict[str, Any]:
    """A UNet call: latents of ``sample_size``², the text states, SDXL's added conditions when it takes them."""
    import torch

    side = config["sample_size"]
    kwargs: dict[str, Any] = {
        "sample": torch.randn(batch, config["in_channels"], side, side, device=device, dtype=dtype),
        "timestep": torch.tensor(500, device=device),
        "encoder_hidden_states": torch.randn(batch, 77, config["cross_attention_dim"], device=device, dtype=dtype)}
    if config.get("addition_embed_type") == "text_time":
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, device=device, dtype=dtype),
                                       "time_ids": torch.randn(batch, 6, device=device, dtype=dtype)}
    return kwargs


def flux2_inputs(config: dict[str, Any], batch: int, device: Any, dtype: Any) -> dict[str, Any]:
    """A FLUX.2 transformer call: ``_image_side``² packed latent tokens (64² at 1024²: 128² latents in 2×2
    patches) with their (t, h, w, l) position ids, ``_text_tokens`` text states with theirs, a timestep in 0…1."""
    import torch

    side, text = config["_image_side"], config["_text_tokens"]
    zero = torch.arange(1)
    grid = torch.cartesian_prod(zero, torch.arange(side), torch.arange(side), zero)
    text_ids = torch.cartesian_prod(zero, zero, zero, torch.arange(text))
    return {"hidden_states": torch.randn(batch, side * side, config["in_channels"], device=device, dtype=dtype),
            "encoder_hidden_states": torch.randn(batch, text, config["joint_attention_dim"], device=device,
                                                 dtype=dtype),
            "timestep": torch.full((batch,), 0.5, device=device, dtype=dtype),
            "img_ids": grid.expand(batch, -1, -1).to(device), "txt_ids": text_ids.expand(batch, -1, -1).to(device)}


SD_BLOCKS = {"down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                  "DownBlock2D"),
             "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")}
SDXL_BLOCKS = {"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
               "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
               "addition_embed_type": "text_time", "use_linear_projection": True}

ARCHITECTURES = (
    # stable-diffusion-v1-5/stable-diffusion-inpainting, unet/config.json
    Architecture("sd15", "UNet2DConditionModel",
                 {**SD_BLOCKS, "sample_size": 64, "in_channels": 9, "out_channels": 4, "layers_per_block": 2,
                  "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8},
                 {**SD_BLOCKS, "sample_size": 16, "in_channels": 9, "out_channels": 4, "layers_per_block": 1,
                  "block_out_channels": (32, 32, 64, 64), "cross_attention_dim": 32, "attention_head_dim": 8,
                  "norm_num_groups": 16},
                 "float16", 20, unet_inputs, 2),
    # diffusers/stable-diffusion-xl-1.0-inpainting-0.1, unet/config.json
    Architecture("sdxl", "UNet2DConditionModel",
                 {**SDXL_BLOCKS, "sample_size": 128, "in_channels": 9, "out_channels": 4, "layers_per_block": 2,
                  "block_out_channels": (320, 640, 1280), "transformer_layers_per_block": (1, 2, 10),
                  "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048, "addition_time_embed_dim": 256,
                  "projection_class_embeddings_input_dim": 2816},
                 {**SDXL_BLOCKS, "sample_size": 16, "in_channels": 9, "out_channels": 4, "layers_per_block": 1,
                  "block_out_channels": (32, 64, 64), "transformer_layers_per_block": (1, 1, 2),
                  "attention_head_dim": (2, 4, 4), "cross_attention_dim": 32, "addition_time_embed_dim": 8,
                  "projection_class_embeddings_input_dim": 80, "norm_num_groups": 16},
                 "float16", 20, unet_inputs, 2),
    # black-forest-labs/FLUX.2-klein-4B: 5 double and 20 single blocks, 24 heads of 128, Qwen3-4B's 3 × 2560 context
    Architecture("flux2-klein-4b", "Flux2Transformer2DModel",
                 {"in_channels": 128, "num_layers": 5, "num_single_layers": 20, "attention_head_dim": 128,
                  "num_attention_heads": 24, "joint_attention_dim": 7680, "guidance_embeds": False,
                  "_image_side": 64, "_text_tokens": 512},
                 {"in_channels": 16, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 32,
                  "num_attention_heads": 2, "joint_attention_dim": 32, "axes_dims_rope": (8, 8, 8, 8),
                  "timestep_guidance_channels": 32, "guidance_embeds": False, "_image_side": 8, "_text_tokens": 16},
                 "bfloat16", 4, flux2_inputs, 1),
)


@dataclass
class Outcome:
    """One setup of one architecture: request times (seconds) and peak memory (bytes), or why it did not run."""

    setup: str
    seconds: list[float] = field(default_factory=list)
    peak: int = 0
    note: str = ""


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def why_not(setup: str, device: Any) -> str:
    """Why ``setup`` cannot run on ``device`` here (``""`` when it can)."""
    import torch

    cuda = device.type == "cuda"
    needs = {"nf4": ("bitsandbytes", True), "int8": ("torchao", False), "fp8": ("torchao", True),
             "gguf": ("gguf", False), "guide-offload": ("accelerate", True)}
    package, needs_cuda = needs.get(setup, ("torch", False))
    if not installed(package):
        return f"{package} is not installed"
    if needs_cuda and not cuda:
        return "needs a CUDA GPU"
    if setup == "fp8" and torch.cuda.get_device_capability(device) < (8, 9):
        return "needs compute capability ≥ 8.9"
    return ""


def build(architecture: Architecture, config: dict[str, Any], setup: str, device: Any, dtype: Any,
          folder: Path) -> tuple[Any, Callable[[], None]]:
    """The model of ``architecture`` held as ``setup`` says, and what runs after each request (the offload)."""
    import diffusers
    import torch

    model_class = getattr(diffusers, architecture.model_class)
    arguments = {key: value for key, value in config.items() if not key.startswith("_")}
    torch.manual_seed(0)
    model = model_class.from_config(arguments).to(dtype).eval()
    after: Callable[[], None] = lambda: None  # noqa: E731 - nothing to do after a resident model's request
    if setup in ("sdpa", "compile"):
        model.to(device)
        if setup == "compile":
            model = torch.compile(model)
    elif setup == "guide-offload":
        from accelerate import cpu_offload_with_hook

        model, hook = cpu_offload_with_hook(model, device)
        after = hook.offload
    elif setup == "gguf":
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_quantized import write_gguf

        model.save_config(folder)
        path = write_gguf(model, folder / "model-Q8_0.gguf")
        del model
        model = model_class.from_single_file(str(path), config=str(folder), torch_dtype=dtype,
                                             quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=dtype))
        model.to(device)
    else:  # nf4, int8, fp8: saved, then loaded quantized as the daemon loads a model
        model.save_pretrained(folder)
        del model
        if setup == "nf4":
            quantization = diffusers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                        bnb_4bit_compute_dtype=dtype)
        else:
            import torchao.quantization

            method = (torchao.quantization.Int8WeightOnlyConfig if setup == "int8"
                      else torchao.quantization.Float8WeightOnlyConfig)
            quantization = diffusers.TorchAoConfig(method())
        model = model_class.from_pretrained(folder, torch_dtype=dtype, quantization_config=quantization)
        with contextlib.suppress(ValueError):  # bitsandbytes' models are placed on the GPU as they load
            model.to(device)
    return model, after


def run_setup(architecture: Architecture, setup: str, device: Any, repeat: int, smoke: bool) -> Outcome:
    """Time ``repeat`` requests of ``architecture`` held as ``setup`` after one warm-up (:class:`Outcome`)."""
    import torch

    reason = why_not(setup, device)
    if reason:
        return Outcome(setup, note=f"not run: {reason}")
    cuda = device.type == "cuda"
    dtype = torch.float32 if smoke else getattr(torch, architecture.dtype)
    config = dict(architecture.smoke_config if smoke else architecture.config)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    outcome = Outcome(setup)
    with tempfile.TemporaryDirectory() as folder:
        try:
            model, after = build(architecture, config, setup, device, dtype, Path(folder))
            inputs = architecture.inputs(config, architecture.batch, device, dtype)
            for sample in range(repeat + 1):
                if cuda:
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                with torch.inference_mode():
                    for _ in range(architecture.steps):
                        model(**inputs)
                after()
                if cuda:
                    torch.cuda.synchronize(device)
                if sample:  # the first is the warm-up (and compile's compilation)
                    outcome.seconds.append(time.perf_counter() - started)
        except Exception as error:  # a setup that fails is reported, the others still run
            outcome.note = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        finally:
            model = inputs = None
            gc.collect()
    if cuda:
        outcome.peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.empty_cache()
    return outcome


def describe(device: Any) -> str:
    import torch

    if device.type != "cuda":
        return f"{device} ({torch.get_num_threads()} threads): {machine()}"
    properties = torch.cuda.get_device_properties(device)
    return (f"{torch.cuda.get_device_name(device)}, compute capability {properties.major}.{properties.minor}, "
            f"{properties.total_memory / 2**30:.1f} GiB; CUDA {torch.version.cuda}; host {machine()}")


def report(results: dict[str, list[Outcome]], header: list[str], smoke: bool) -> str:
    lines = [*header, ""]
    for name, outcomes in results.items():
        architecture = next(a for a in ARCHITECTURES if a.name == name)
        lines += [f"## {name}", "", f"One request: {architecture.steps} calls at batch {architecture.batch}"
                  f"{' (smoke size, float32)' if smoke else f', {architecture.dtype}'}.", "",
                  "| setup | request (median) | per step | peak memory | samples | note |", "|---|---|---|---|---|---|"]
        for outcome in outcomes:
            if outcome.seconds:
                median = statistics.median(outcome.seconds)
                peak = f"{outcome.peak / 2**30:.2f} GiB" if outcome.peak else "-"
                samples = ", ".join(f"{seconds * 1000:.1f}" for seconds in outcome.seconds)
                step = median * 1000 / architecture.steps
                lines.append(f"| {outcome.setup} | {median * 1000:.1f} ms | {step:.1f} ms | {peak} | {samples} ms "
                             f"| {outcome.note} |")
            else:
                lines.append(f"| {outcome.setup} | - | - | - | - | {outcome.note} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks it runs, measures nothing")
    parser.add_argument("--repeat", type=int, default=3, help="timed requests per setup (after one warm-up)")
    parser.add_argument("--only", nargs="*", choices=[a.name for a in ARCHITECTURES], help="architectures to run")
    parser.add_argument("--setups", nargs="*", choices=SETUPS, default=list(SETUPS), help="setups to run")
    args = parser.parse_args(argv)
    import torch

    device = torch.device("cpu") if args.smoke else torch.device("cuda")
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU: use --smoke to check the script on the CPU")
    started = datetime.now(timezone.utc)
    results = {}
    for architecture in ARCHITECTURES:
        if args.only and architecture.name not in args.only:
            continue
        results[architecture.name] = [run_setup(architecture, setup, device, args.repeat, args.smoke)
                                      for setup in args.setups]
        print(report({architecture.name: results[architecture.name]}, [], args.smoke), flush=True)
    found = versions()
    for package in ("accelerate", "bitsandbytes", "torchao", "gguf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    title = f"# bench/gpu.py, {started:%Y-%m-%d %H:%M} UTC"
    header = [title + (" — CPU SMOKE RUN, NOT A MEASUREMENT" if args.smoke else ""), ""]
    if args.smoke:
        header += ["Tiny configs on the CPU, float32: this only checks that every setup runs (or says why not); "
                   "its times say nothing about a GPU.", ""]
    header += [f"Command: `bench/gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`; {args.repeat} "
               "timed requests per setup after one warm-up.", "",
               "Versions: " + ", ".join(f"{name} {version}" for name, version in found.items()) + ".", "",
               f"Device: {describe(device)}."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"gpu-{started:%Y-%m-%dT%H%MZ}{'-smoke' if args.smoke else ''}.md"
    path.write_text(report(results, header, args.smoke), encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
