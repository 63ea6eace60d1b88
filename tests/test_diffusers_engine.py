"""The diffusers engine and device selection, run on a tiny random-weight SD inpainting pipeline.

The pipeline (tests/tiny_pipelines.py) is built offline and loaded through the engine's real
loading code (``AutoPipelineForInpainting.from_pretrained``); its native size is 128 pixels, so a
request takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gimp_inpaint.daemon.engines.base import EngineJob, EngineLoadError, JobCancelled
from gimp_inpaint.daemon.engines.diffusers_engine import (
    INSTALL_HINT,
    SAFETY_CHECKER_MESSAGE,
    DiffusersEngine,
    resized,
    scaled_size,
)
from gimp_inpaint.daemon.pool import ModelPool
from gimp_inpaint.daemon.registry import EmbeddingSpec, LoraSpec, ModelSpec, Registry
from gimp_inpaint.protocol import (
    Error,
    ErrorCode,
    FillOptions,
    InpaintRequest,
    Plane,
    ProtocolError,
    Result,
    Scheduler,
    Stage,
    Variant,
)
from skimage import data

REPO = Path(__file__).resolve().parents[1]


def astronaut_job(seed: int = 7, prompt: str = "a red helmet", strength: float = 1.0,
                  num_inference_steps: int = 4) -> EngineJob:
    """A 100×140 crop of skimage's astronaut (sides not multiples of 8) with a rectangle to repaint."""
    image = np.ascontiguousarray(data.astronaut()[20:220:2, 100:380:2])
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[30:70, 50:100] = 255
    options = FillOptions(prompt=prompt, negative_prompt="blurry", strength=strength, guidance_scale=7.5,
                          num_inference_steps=num_inference_steps)
    return EngineJob(image=image, mask=mask, options=options, seed=seed)


def request_for(job: EngineJob, job_id: str = "j1", **fields: Any) -> InpaintRequest:
    """An inpaint request carrying ``job``'s crop (made opaque RGBA), mask and options, with ``fields`` changed."""
    rgba = np.dstack([job.image, np.full(job.image.shape[:2], 255, np.uint8)])
    height, width = job.mask.shape
    return InpaintRequest(job_id=job_id, x=10, y=20, image=Plane(width, height, 4, rgba.tobytes()),
                          mask=Plane(width, height, 1, job.mask.tobytes()),
                          options=replace(job.options, engine="tiny", **fields))


def run_request(request: InpaintRequest, engine: DiffusersEngine,
                progress: Any = None) -> tuple[Result | Error, list[Variant]]:
    """The worker's ``run_job`` on ``request``: its outcome and the variants it delivered."""
    from gimp_inpaint.daemon.worker import run_job

    delivered: list[Variant] = []
    outcome = run_job(request, engine, progress or no_progress, never, delivered.append)
    return outcome, delivered


def make_engine(name: str, model: str, device: str = "auto", **spec: object) -> DiffusersEngine:
    """A :class:`DiffusersEngine` for ``ModelSpec(name, model, **spec)``, no LoRAs, in its own 100 GB pool."""
    return DiffusersEngine(ModelSpec(name, model, **spec), Registry(), ModelPool(100 * 10**9), device=device)


def no_progress(step: int, total: int, stage: str = "inference") -> None:
    """A progress callback (engine or worker) that ignores the report."""


def never() -> bool:
    """A cancel check for jobs that are never cancelled."""
    return False


@pytest.fixture
def engine(tiny_inpaint_model: Path) -> DiffusersEngine:
    return make_engine("tiny", str(tiny_inpaint_model), device="cpu")


@pytest.fixture
def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wraps ``AutoPipelineForInpainting.from_pretrained``; returns the list of models it was called with."""
    diffusers = pytest.importorskip("diffusers")
    calls: list[str] = []
    original = diffusers.AutoPipelineForInpainting.from_pretrained

    def counting(model: str, **kwargs: object) -> object:
        calls.append(model)
        return original(model, **kwargs)

    monkeypatch.setattr(diffusers.AutoPipelineForInpainting, "from_pretrained", counting)
    return calls


# --- pure helpers (no torch needed) ---


@pytest.mark.parametrize(("width", "height", "long_side", "expected"), [
    (140, 100, 128, (128, 88)),     # 100·128/140 = 91.4 → 88
    (100, 140, 512, (368, 512)),    # small crops are scaled up to the native size
    (2048, 1536, 512, (512, 384)),  # large ones down
    (512, 512, 512, (512, 512)),
    (4000, 10, 512, (512, 8)),      # never below one latent pixel
])
def test_scaled_size_keeps_aspect_ratio_on_the_latent_grid(width: int, height: int, long_side: int,
                                                           expected: tuple[int, int]) -> None:
    assert scaled_size(width, height, long_side) == expected


def test_without_diffusers_info_says_how_to_install_and_load_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gimp_inpaint.daemon.engines.diffusers_engine.diffusers_available", lambda: False)
    engine = make_engine("sd", "owner/model")
    info = engine.info()
    assert (info.available, info.kind, info.model, info.uses_prompt) == (False, "diffusers", "owner/model", True)
    assert INSTALL_HINT in info.detail
    with pytest.raises(EngineLoadError, match="gimp-inpaint\\[diffusers\\]"):
        engine.load()


def test_the_handshake_carries_the_models_licence_from_the_table_or_the_registry() -> None:
    fill = make_engine("fill", "black-forest-labs/FLUX.1-Fill-dev").info()
    assert (fill.licence, fill.non_commercial) == ("FLUX.1 [dev] Non-Commercial License", True)
    assert fill.licence_note == "FLUX.1 [dev] Non-Commercial License, non-commercial use only"
    klein = make_engine("klein", "black-forest-labs/FLUX.2-klein-4B").info()
    assert (klein.licence, klein.non_commercial, klein.licence_note) == ("Apache 2.0", False, "Apache 2.0")
    assert make_engine("mine", "./mine").info().licence == ""  # not known: the daemon does not guess
    declared = make_engine("mine", "./mine", licence="My Licence", non_commercial=True).info()
    assert (declared.licence, declared.non_commercial) == ("My Licence", True)


def test_modules_import_without_torch() -> None:
    code = ("import sys, gimp_inpaint.daemon.engines.diffusers_engine, gimp_inpaint.daemon.device; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_strength_too_low_for_any_step_is_refused_before_loading() -> None:
    engine = make_engine("sd", "nobody/nonexistent-model")  # a hub id: no local path to check
    with pytest.raises(ProtocolError, match="no denoising step") as caught:
        engine.check(astronaut_job(strength=0.2, num_inference_steps=4))  # int(0.8) = 0 steps
    assert caught.value.code is ErrorCode.INVALID_REQUEST  # the worker answers with this code
    assert engine.info().detail == "loads on first use"  # nothing was loaded, nothing failed


# --- device selection ---


@pytest.mark.diffusers
def test_device_selection_on_this_machine() -> None:
    torch = pytest.importorskip("torch")
    from gimp_inpaint.daemon.device import DeviceUnavailableError, describe_device, resolve_device, torch_dtype_for

    cpu = resolve_device("cpu")
    assert cpu.type == "cpu" and torch_dtype_for(cpu) == torch.float32
    assert describe_device(cpu) == f"cpu ({torch.get_num_threads()} threads)"
    expected_auto = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected_auto
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        gpu = resolve_device("cuda")
        assert torch_dtype_for(gpu) == torch.float16
        assert describe_device(gpu) == f"cuda:{gpu.index} ({torch.cuda.get_device_name(gpu.index)})"
    else:
        with pytest.raises(DeviceUnavailableError, match=r"CUDA is not available.*--device cpu"):
            resolve_device("cuda")


@pytest.mark.diffusers
def test_set_torch_threads() -> None:
    torch = pytest.importorskip("torch")
    from gimp_inpaint.daemon.device import set_torch_threads

    before = torch.get_num_threads()
    try:
        set_torch_threads(1)
        assert torch.get_num_threads() == 1
        set_torch_threads(0)  # 0 = leave torch's setting alone
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        set_torch_threads(-1)


# --- the engine on the tiny pipeline ---


@pytest.mark.diffusers
def test_output_is_the_crop_size_and_model_runs_at_native_size(engine: DiffusersEngine,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    sizes: list[tuple[int, int, tuple[int, int], tuple[int, int]]] = []
    original_call = StableDiffusionInpaintPipeline.__call__

    def recording_call(pipe: StableDiffusionInpaintPipeline, **kwargs: object) -> object:
        sizes.append((kwargs["width"], kwargs["height"], kwargs["image"].size, kwargs["mask_image"].size))
        return original_call(pipe, **kwargs)

    monkeypatch.setattr(StableDiffusionInpaintPipeline, "__call__", recording_call)
    job = astronaut_job()
    out = engine.inpaint(job, no_progress, never)
    assert out.shape == (100, 140, 3) and out.dtype == np.uint8
    assert sizes == [(128, 88, (128, 88), (128, 88))]  # long side = 16 latents × 8, height/width passed
    repainted = job.mask == 255
    assert np.abs(out[repainted].astype(int) - job.image[repainted]).mean() > 10  # random weights: not the input


@pytest.mark.diffusers
def test_same_seed_same_pixels_other_seed_or_prompt_other_pixels(engine: DiffusersEngine) -> None:
    first = engine.inpaint(astronaut_job(seed=7), no_progress, never)
    again = engine.inpaint(astronaut_job(seed=7), no_progress, never)
    other_seed = engine.inpaint(astronaut_job(seed=8), no_progress, never)
    other_prompt = engine.inpaint(astronaut_job(seed=7, prompt="green grass"), no_progress, never)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other_seed).mean() > 1
    assert np.abs(first.astype(int) - other_prompt).mean() > 0


@pytest.mark.diffusers
@pytest.mark.parametrize(("strength", "steps"), [(1.0, 6), (0.5, 10)])
def test_progress_counts_the_steps_actually_run(engine: DiffusersEngine, strength: float, steps: int) -> None:
    job = astronaut_job(strength=strength, num_inference_steps=steps)
    reports: list[tuple[int, int]] = []
    engine.inpaint(job, lambda step, total: reports.append((step, total)), never)
    total = engine.prepare(job)
    ran = engine.pipeline.num_timesteps  # the pipeline's own count of its denoising loop
    assert total == ran
    assert reports == [(step, total) for step in range(1, total + 1)]


@pytest.mark.diffusers
def test_cancel_after_the_first_step(engine: DiffusersEngine) -> None:
    reports: list[tuple[int, int]] = []
    job = astronaut_job(num_inference_steps=6)
    with pytest.raises(JobCancelled):
        engine.inpaint(job, lambda step, total: reports.append((step, total)), lambda: len(reports) >= 1)
    assert reports == [(1, engine.prepare(job))]  # interrupted: no further step ran
    assert engine.inpaint(job, no_progress, never).shape == (100, 140, 3)  # the next job runs normally


@pytest.mark.diffusers
def test_cancelled_before_start_runs_nothing(engine: DiffusersEngine, count_loads: list[str]) -> None:
    with pytest.raises(JobCancelled):
        engine.inpaint(astronaut_job(), no_progress, lambda: True)
    assert count_loads == []


@pytest.mark.diffusers
def test_pipeline_is_loaded_once_for_many_requests(engine: DiffusersEngine, count_loads: list[str]) -> None:
    assert engine.info().detail == "loads on first use"
    engine.load()
    for seed in range(3):
        engine.inpaint(astronaut_job(seed=seed), no_progress, never)
    engine.load()
    assert count_loads == [engine.model]
    info = engine.info()
    assert info.available and info.detail.startswith("loaded on cpu (")


@pytest.mark.diffusers
def test_missing_local_folder_fails_clearly_and_a_later_load_retries(tmp_path: Path, count_loads: list[str],
                                                                     tiny_inpaint_model: Path) -> None:
    folder = tmp_path / "models" / "sd-inpaint"
    engine = make_engine("local", str(folder), device="cpu")
    with pytest.raises(EngineLoadError, match=f"model folder {folder} does not exist"):
        engine.inpaint(astronaut_job(), no_progress, never)
    info = engine.info()
    assert not info.available and f"{folder} does not exist" in info.detail
    assert count_loads == []

    shutil.copytree(tiny_inpaint_model, folder)  # the user puts the model there; no restart needed
    assert engine.inpaint(astronaut_job(), no_progress, never).shape == (100, 140, 3)
    assert engine.info().available and count_loads == [str(folder)]


@pytest.mark.diffusers
def test_folder_that_is_not_a_pipeline_fails_clearly(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    engine = make_engine("empty", str(tmp_path), device="cpu")
    with pytest.raises(EngineLoadError, match=r"could not load .*model_index\.json"):
        engine.load()
    assert not engine.info().available


@pytest.mark.diffusers
def test_unknown_device_fails_as_a_load_error(tiny_inpaint_model: Path) -> None:
    pytest.importorskip("torch")
    engine = make_engine("tiny", str(tiny_inpaint_model), device="tpu")
    with pytest.raises(EngineLoadError, match="unknown device 'tpu'"):
        engine.load()
    assert "unknown device" in engine.info().detail


OFFLINE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from gimp_inpaint.daemon.engines.base import EngineJob, EngineLoadError
    from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
    from gimp_inpaint.daemon.pool import ModelPool
    from gimp_inpaint.daemon.registry import ModelSpec, Registry
    from gimp_inpaint.protocol import FillOptions

    result = {}
    pool = ModelPool(10**11)
    missing = DiffusersEngine(ModelSpec("missing", "nobody/not-downloaded-inpainting"), Registry(), pool, device="cpu")
    try:
        missing.load()
    except EngineLoadError as error:
        result["missing_error"] = str(error)
    result["missing_info"] = [missing.info().available, missing.info().detail]
    cached = DiffusersEngine(ModelSpec("cached", "tiny/inpaint"), Registry(), pool, device="cpu")
    image = np.full((64, 80, 3), 128, np.uint8)
    mask = np.zeros((64, 80), np.uint8)
    mask[16:48, 20:60] = 255
    job = EngineJob(image, mask, FillOptions(guidance_scale=5.0, num_inference_steps=2), seed=1)
    out = cached.inpaint(job, lambda s, t: None, lambda: False)
    result["cached_shape"] = list(out.shape)
    print(json.dumps(result))
""")


@pytest.mark.diffusers
def test_offline_mode_loads_cached_hub_models_and_explains_missing_ones(tmp_path: Path,
                                                                        tiny_inpaint_model: Path) -> None:
    """HF_HUB_OFFLINE is read when huggingface_hub is imported, hence a fresh interpreter.

    The tiny pipeline is placed in an empty Hugging Face cache as the hub id ``tiny/inpaint``
    (the cache layout huggingface_hub writes: ``models--OWNER--NAME/snapshots/COMMIT`` and ``refs/main``).
    """
    pytest.importorskip("diffusers")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "hf" / "hub" / "models--tiny--inpaint"
    shutil.copytree(tiny_inpaint_model, repo_cache / "snapshots" / commit)
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    run = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in result["missing_error"]
    assert "nobody/not-downloaded-inpainting" in result["missing_error"]
    assert result["missing_info"][0] is False and "HF_HUB_OFFLINE" in result["missing_info"][1]
    assert result["cached_shape"] == [64, 80, 3]


# --- through the daemon's worker ---


def whole_crop(variant: Variant, request: InpaintRequest) -> tuple[np.ndarray, np.ndarray]:
    """A variant pasted into its request's crop: the RGBA (the request's pixels outside the variant's box) and the
    blend mask (0 there)."""
    left, top = variant.x - request.x, variant.y - request.y
    box = slice(top, top + variant.image.height), slice(left, left + variant.image.width)
    image = np.frombuffer(request.image.data, np.uint8).reshape(request.image.height, request.image.width, 4).copy()
    mask = np.zeros((request.image.height, request.image.width), np.uint8)
    image[box] = np.frombuffer(variant.image.data, np.uint8).reshape(variant.image.height, variant.image.width, 4)
    mask[box] = np.frombuffer(variant.mask.data, np.uint8).reshape(variant.mask.height, variant.mask.width)
    return image, mask


@pytest.mark.diffusers
def test_worker_runs_the_engine_and_keeps_unmasked_pixels(engine: DiffusersEngine) -> None:
    job = astronaut_job(num_inference_steps=5)
    rgba = np.dstack([job.image, np.full(job.image.shape[:2], 255, np.uint8)])
    request = request_for(job, seed=41, num_variants=2, grow=2, feather=4)
    reports: list[tuple[int, int]] = []
    stages: list[Stage] = []

    def record(step: int, total: int, stage: Stage) -> None:
        stages.append(stage)
        if stage is Stage.INFERENCE:
            reports.append((step, total))

    result, variants = run_request(request, engine, record)
    assert result == Result(job_id="j1", num_variants=2), result
    per_variant = engine.prepare(job)
    assert reports[0] == (0, 2 * per_variant) and reports[-1] == (2 * per_variant, 2 * per_variant)
    assert stages[0] is Stage.LOAD and stages.count(Stage.LOAD) == 1  # the model loaded once, from a local folder
    assert [variant.seed for variant in variants] == [41, 42]
    crops = [whole_crop(variant, request) for variant in variants]
    for image, blend in crops:
        np.testing.assert_array_equal(image[blend == 0], rgba[blend == 0])
    assert not np.array_equal(crops[0][0], crops[1][0])


@pytest.mark.diffusers
def test_worker_reports_a_missing_model_as_engine_unavailable(tmp_path: Path) -> None:
    engine = make_engine("gone", str(tmp_path / "gone"), device="cpu")
    job = astronaut_job()
    height, width = job.mask.shape
    request = InpaintRequest(job_id="j2", x=0, y=0,
                             image=Plane(width, height, 4, np.zeros((height, width, 4), np.uint8).tobytes()),
                             mask=Plane(width, height, 1, job.mask.tobytes()), options=FillOptions(engine="gone"))
    error, variants = run_request(request, engine)
    assert isinstance(error, Error) and variants == []
    assert error.code is ErrorCode.ENGINE_UNAVAILABLE and "does not exist" in error.message


@pytest.mark.diffusers
def test_step_counts_build_one_scheduler_per_setting(engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting the steps asks a fresh scheduler once per (steps, strength), not once per variant or job (the
    model's own scheduler, restored by scheduler "default", is built once more, at the first request)."""
    engine.load()
    scheduler_class = type(engine.pipeline.scheduler)
    built: list[type] = []
    from_config = scheduler_class.from_config.__func__

    def counting_from_config(cls: type, *args: object, **kwargs: object) -> object:
        built.append(cls)
        return from_config(cls, *args, **kwargs)

    monkeypatch.setattr(scheduler_class, "from_config", classmethod(counting_from_config))
    job = astronaut_job(num_inference_steps=4)
    for job_id in ("first", "second"):
        result, _ = run_request(request_for(job, job_id, seed=3, num_variants=3), engine)
        assert isinstance(result, Result), result
    assert built == [scheduler_class] * 2  # "default" built once, the step count once
    six_steps = astronaut_job(num_inference_steps=6)
    assert engine.prepare(six_steps) == engine.prepare(six_steps) == 7  # PNDM runs one timestep more
    assert built == [scheduler_class] * 3


class PipelineSpy:
    """Counts what changes a tiny pipeline's options: scheduler assignments (the pipeline class's ``__setattr__``)
    and calls of ``set_adapters``, ``load_lora_weights`` and ``load_textual_inversion`` (wrapped on the instance)."""

    def __init__(self, pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, int] = {"scheduler": 0, "set_adapters": 0, "load_lora_weights": 0,
                                      "load_textual_inversion": 0}
        setattr_ = type(pipeline).__setattr__

        def counting_setattr(instance: Any, name: str, value: Any) -> None:
            if instance is pipeline and name == "scheduler":
                self.calls["scheduler"] += 1
            setattr_(instance, name, value)

        monkeypatch.setattr(type(pipeline), "__setattr__", counting_setattr)
        for method in ("set_adapters", "load_lora_weights", "load_textual_inversion"):
            original = getattr(pipeline, method)

            def counting(*args: Any, _method: str = method, _original: Any = original, **kwargs: Any) -> Any:
                self.calls[_method] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(pipeline, method, counting)


@pytest.fixture
def optioned(tiny_sd_model: Path, tiny_sd_lora: Path, tiny_sd_embedding: tuple[Path, str]) -> DiffusersEngine:
    """The tiny 4-channel SD model with the tiny LoRA and embedding in its registry, loaded."""
    embedding, token = tiny_sd_embedding
    registry = Registry(loras=(LoraSpec("sd-lora", tiny_sd_lora, "sd"),),
                        embeddings=(EmbeddingSpec("emb", embedding, token, "sd"),))
    engine = DiffusersEngine(ModelSpec("tiny", str(tiny_sd_model)), registry, ModelPool(10**11), device="cpu")
    engine.load()
    return engine


def optioned_job(token: str, seed: int = 3, **fields: Any) -> EngineJob:
    """A job with a scheduler, a LoRA and an embedding token in its prompt (3 steps), ``fields`` over them."""
    job = astronaut_job(seed=seed, num_inference_steps=3, prompt=f"a {token} helmet")
    options = replace(job.options, **{"scheduler": "euler_a", "loras": {"sd-lora": 0.8}, "refiner_strength": 0.5,
                                      **fields})
    return replace(job, options=options)


@pytest.mark.diffusers
def test_check_validates_and_changes_nothing(optioned: DiffusersEngine, tiny_sd_embedding: tuple[Path, str]) -> None:
    """``check`` on a job with a scheduler, a LoRA, an embedding and a refining pass leaves the pipeline as it
    was: same scheduler object, no adapter, no new token, no image-to-image companion; it still refuses what
    cannot run."""
    token = tiny_sd_embedding[1]
    pipeline = optioned.pipeline
    scheduler, vocabulary = pipeline.scheduler, len(pipeline.tokenizer)
    loaded = optioned.pool.peek(optioned.main_key)
    for _ in range(2):
        optioned.check(optioned_job(token))
    assert pipeline.scheduler is scheduler and type(scheduler).__name__ == "PNDMScheduler"
    assert not any(pipeline.get_list_adapters().values())
    assert len(pipeline.tokenizer) == vocabulary and token not in pipeline.tokenizer.get_vocab()
    assert loaded.applied is None and loaded.embeddings == set() and loaded._image_to_image is None
    with pytest.raises(ProtocolError) as caught:
        optioned.check(optioned_job(token, loras={"nope": 1.0}))
    assert caught.value.code is ErrorCode.INCOMPATIBLE
    with pytest.raises(ProtocolError, match="no refining step"):
        optioned.check(optioned_job(token, refiner_strength=0.2))  # int(3 × 0.2) = 0
    assert pipeline.scheduler is scheduler and not any(pipeline.get_list_adapters().values())


@pytest.mark.diffusers
def test_options_are_applied_once_per_job(optioned: DiffusersEngine, tiny_sd_embedding: tuple[Path, str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the worker, a job of 3 variants swaps the scheduler and sets the adapters once, loads the LoRA and
    the embedding once; the next job with the same options applies them once more, and loads nothing."""
    token = tiny_sd_embedding[1]
    spy = PipelineSpy(optioned.pipeline, monkeypatch)
    job = optioned_job(token)
    result, variants = run_request(request_for(job, "first", seed=9, num_variants=3), optioned)
    assert result == Result(job_id="first", num_variants=3) and len(variants) == 3
    assert spy.calls == {"scheduler": 1, "set_adapters": 1, "load_lora_weights": 1, "load_textual_inversion": 1}
    assert type(optioned.pipeline.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert optioned.pool.peek(optioned.main_key).embeddings == {token}
    result, _ = run_request(request_for(job, "second", seed=9, num_variants=2), optioned)
    assert isinstance(result, Result)
    assert spy.calls == {"scheduler": 2, "set_adapters": 2, "load_lora_weights": 1, "load_textual_inversion": 1}


@pytest.mark.diffusers
def test_inpaint_applies_the_options_it_is_given(optioned: DiffusersEngine, tiny_sd_embedding: tuple[Path, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Called without ``prepare`` (or after another request's), ``inpaint`` checks and applies its job's options
    once, then runs the next variants of the same options as they are: the pixels equal the prepared run's."""
    token = tiny_sd_embedding[1]
    job = optioned_job(token)
    optioned.check(job)
    optioned.prepare(job)
    prepared = [optioned.inpaint(replace(job, seed=seed), no_progress, never) for seed in (1, 2)]
    plain = astronaut_job(seed=1, num_inference_steps=3, prompt=f"a {token} helmet")
    optioned.inpaint(plain, no_progress, never)  # the defaults: another scheduler, the LoRA off
    spy = PipelineSpy(optioned.pipeline, monkeypatch)
    again = [optioned.inpaint(replace(job, seed=seed), no_progress, never) for seed in (1, 2)]
    assert spy.calls == {"scheduler": 1, "set_adapters": 1, "load_lora_weights": 0, "load_textual_inversion": 0}
    for first, second in zip(prepared, again, strict=True):
        np.testing.assert_array_equal(first, second)


@pytest.fixture(scope="module")
def flagging_model(tiny_inpaint_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline plus diffusers' real ``StableDiffusionSafetyChecker`` (tiny random CLIP vision model),
    saved and loaded like stable-diffusion-inpainting's. Its concept thresholds are −2, below any cosine
    similarity, so it flags every image: the pipeline blacks the image out and reports ``nsfw_content_detected``."""
    torch = pytest.importorskip("torch")
    from diffusers import StableDiffusionInpaintPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    tiny_clip = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1}
    config = CLIPConfig(text_config=tiny_clip, vision_config={**tiny_clip, "image_size": 32, "patch_size": 8},
                        projection_dim=32)
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0)
    pipeline = StableDiffusionInpaintPipeline.from_pretrained(tiny_inpaint_model)
    pipeline.register_modules(safety_checker=checker, feature_extractor=CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    folder = tmp_path_factory.mktemp("checked") / "model"
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.diffusers
def test_an_image_blanked_by_the_safety_checker_is_a_clear_job_failure(flagging_model: Path) -> None:
    engine = make_engine("checked", str(flagging_model), device="cpu")
    with pytest.raises(ProtocolError) as caught:
        engine.inpaint(astronaut_job(seed=7), no_progress, never)
    assert caught.value.code is ErrorCode.JOB_FAILED
    assert caught.value.message == SAFETY_CHECKER_MESSAGE.format(seed=7)
    assert "safety checker blanked" in caught.value.message and "another prompt or seed" in caught.value.message

    error, variants = run_request(request_for(astronaut_job(), "flagged", seed=41), engine)
    assert isinstance(error, Error) and variants == []
    assert (error.code, error.message, error.job_id) == (ErrorCode.JOB_FAILED, SAFETY_CHECKER_MESSAGE.format(seed=41),
                                                         "flagged")

    import torch

    with torch.no_grad():  # thresholds above any similarity: the same checker now flags nothing
        engine.pipeline.safety_checker.concept_embeds_weights.fill_(2.0)
    job = astronaut_job(seed=7)
    out = engine.inpaint(job, no_progress, never)
    assert out[job.mask == 255].mean() > 10  # the generated pixels, not the black image


@pytest.mark.diffusers
def test_eta_reaches_the_ddim_scheduler(engine: DiffusersEngine) -> None:
    """``eta`` 1 makes each DDIM step add fresh noise (diffusers' ``eta``): other pixels than η = 0 from the same seed,
    the same pixels again for the same η; schedulers without η (Euler) ignore it."""
    ddim = astronaut_job(seed=7)
    ddim = replace(ddim, options=replace(ddim.options, scheduler=Scheduler.DDIM))
    noisy = replace(ddim, options=replace(ddim.options, eta=1.0))
    assert "eta" in engine.info().options
    engine.load()

    def run(job: EngineJob) -> np.ndarray:
        engine.check(job)
        engine.prepare(job)
        return engine.inpaint(job, no_progress, never)

    first = run(noisy)
    np.testing.assert_array_equal(first, run(noisy))
    assert np.abs(first.astype(int) - run(ddim)).mean() > 0.5
    euler = replace(ddim, options=replace(ddim.options, scheduler=Scheduler.EULER))
    np.testing.assert_array_equal(run(euler), run(replace(euler, options=replace(euler.options, eta=1.0))))


def test_the_crop_shrinks_by_area_grows_by_lanczos_and_stays_itself_at_its_size() -> None:
    """Shrinking a real photo 4× gives each 4×4 block's mean (area interpolation, to the rounding); growing gives
    the asked size and keeps the photo's mean colour; the model's own size is the array itself, not a copy."""
    photo = data.astronaut()[:256, :192]
    small = resized(photo, 48, 64)
    blocks = photo.reshape(64, 4, 48, 4, 3).mean(axis=(1, 3))
    assert small.shape == (64, 48, 3) and np.abs(small - blocks).max() <= 0.5 + 1e-6
    grown = resized(small, 192, 256)
    assert grown.shape == photo.shape and abs(float(grown.mean()) - float(photo.mean())) < 1.0
    assert resized(photo, 192, 256) is photo
    mask = np.zeros((256, 192), np.uint8)
    mask[64:192, 48:144] = 255
    assert resized(mask, 48, 64).shape == (64, 48) and set(np.unique(resized(mask, 48, 64))) == {0, 255}
