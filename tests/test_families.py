"""Every model family of issue 3 through the real daemon, on tiny random-weight pipelines (tests/tiny_pipelines.py).

Each family runs one request through the websocket daemon (:func:`running_daemon.running_daemon` +
:class:`client.connection.InpaintClient`) on a crop of skimage's astronaut: the result has the request's size,
keeps unmasked pixels exactly, repeats itself for a seed, and its two variants differ. Then what the families
share (the pool's modules), refuse (INCOMPATIBLE options) and add (refining passes), and the engine's loading
helpers: byte progress of downloads, single-file detection, placement, the memory budget, the out-of-memory retry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from gimp_inpaint.daemon.engines.base import EngineJob, EngineLoadError, JobCancelled
from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
from gimp_inpaint.daemon.engines.families import FAMILY_STRATEGIES
from gimp_inpaint.daemon.engines.flow import FlowStrategy
from gimp_inpaint.daemon.engines.flux2_klein import FLUX2_KLEIN_BASE
from gimp_inpaint.daemon.pool import ModelPool
from gimp_inpaint.daemon.registry import EmbeddingSpec, LoraSpec, ModelSpec, Registry
from gimp_inpaint.protocol import FILL_OPTIONS, ErrorCode, Family, FillOptions, InpaintRequest, Plane, Variant
from skimage import data
from test_diffusers_engine import whole_crop

pytestmark = pytest.mark.diffusers

STEPS = 3
"""Denoising steps of every request (the tiny models draw noise anyway)."""


def astronaut_crop() -> tuple[np.ndarray, np.ndarray]:
    """A 96×120 RGB crop of skimage's astronaut (H×W×3 uint8) and a mask (H×W uint8) repainting a rectangle."""
    image = np.ascontiguousarray(data.astronaut()[40:232:2, 120:360:2])
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[24:72, 30:90] = 255
    return image, mask


def request(engine: str, seed: int = 11, job_id: str = "job", **fields: Any) -> InpaintRequest:
    """An inpaint request on :func:`astronaut_crop` (opaque RGBA) with ``fields`` over two-variant defaults."""
    image, mask = astronaut_crop()
    height, width = mask.shape
    rgba = np.dstack([image, np.full((height, width), 255, np.uint8)])
    values: dict[str, Any] = {"prompt": "a red balloon", "num_inference_steps": STEPS, "num_variants": 2,
                              "grow": 0, "feather": 4, **fields}
    return InpaintRequest(job_id=job_id, x=5, y=7, image=Plane(width, height, 4, rgba.tobytes()),
                          mask=Plane(width, height, 1, mask.tobytes()),
                          options=FillOptions(engine=engine, seed=seed, **values))


def job(seed: int, **fields: Any) -> EngineJob:
    """An engine job on :func:`astronaut_crop` with ``fields`` over guidance 5 and 4 steps, an empty prompt."""
    image, mask = astronaut_crop()
    return EngineJob(image, mask, FillOptions(**{"guidance_scale": 5.0, "num_inference_steps": 4, **fields}), seed)


@pytest.fixture(scope="module")
def pool() -> ModelPool:
    """One pool for all the module's engines (100 GB: nothing is evicted unless a test asks)."""
    return ModelPool(100 * 10**9)


@pytest.fixture(scope="module")
def engines(pool: ModelPool, tiny_inpaint_model: Path, tiny_sd_model: Path, tiny_sd_single_file: Path,
            tiny_sdxl_inpaint_model: Path, tiny_sdxl_refiner_model: Path, tiny_kandinsky22_inpaint_model: Path,
            tiny_controlnet_model: Path, tiny_flux2_klein_model: Path, tiny_z_image_model: Path,
            tiny_qwen_image_model: Path, tiny_sd3_model: Path, tiny_flux_fill_model: Path,
            tiny_flux_kontext_model: Path, tiny_chroma_model: Path, tiny_sd_lora: Path,
            tiny_flux_lora: Path) -> dict[str, DiffusersEngine]:
    """One engine per family, by name; family left to ``auto`` where the model says it."""
    specs = [
        ModelSpec("sd-inpaint", str(tiny_inpaint_model)),
        ModelSpec("sd", str(tiny_sd_model), family="sd"),
        ModelSpec("sd-file", str(tiny_sd_single_file), config=str(tiny_sd_model)),
        ModelSpec("sdxl-inpaint", str(tiny_sdxl_inpaint_model)),
        ModelSpec("sdxl-refined", str(tiny_sdxl_inpaint_model), family="sdxl-inpaint",
                  refiner=str(tiny_sdxl_refiner_model)),
        ModelSpec("kandinsky", str(tiny_kandinsky22_inpaint_model)),
        ModelSpec("controlnet", str(tiny_sd_model), family="sd-controlnet-inpaint",
                  controlnet=str(tiny_controlnet_model)),
        ModelSpec("flux2-klein", str(tiny_flux2_klein_model)),
        ModelSpec("z-image", str(tiny_z_image_model)),
        ModelSpec("qwen-image", str(tiny_qwen_image_model)),
        ModelSpec("sd3", str(tiny_sd3_model)),
        ModelSpec("flux-fill", str(tiny_flux_fill_model)),
        ModelSpec("flux-kontext", str(tiny_flux_kontext_model)),
        ModelSpec("chroma", str(tiny_chroma_model)),
    ]
    loras = (LoraSpec("sd-lora", tiny_sd_lora, "sd"), LoraSpec("flux-lora", tiny_flux_lora, "flux"))
    registry = Registry(models=tuple(specs), loras=loras)
    return {spec.name: DiffusersEngine(spec, registry, pool, device="cpu") for spec in specs}


@pytest.fixture(scope="module")
def daemon(engines: dict[str, DiffusersEngine], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(url, token)`` of the real daemon serving :func:`engines`."""
    from running_daemon import running_daemon

    with running_daemon(tmp_path_factory.mktemp("config"), list(engines.values())) as served:
        yield served


def run(daemon: tuple[str, str], inpaint_request: InpaintRequest) -> list[Variant]:
    """Send ``inpaint_request`` through a fresh client connection; its variants (or the client's DaemonError)."""
    from gimp_inpaint.client.connection import InpaintClient

    url, token = daemon
    with InpaintClient.connect(url, token, "pytest", timeout=30) as client:
        return client.inpaint(inpaint_request)


def daemon_error(daemon: tuple[str, str], inpaint_request: InpaintRequest) -> Any:
    """The DaemonError the daemon answers ``inpaint_request`` with."""
    from gimp_inpaint.client.connection import DaemonError

    with pytest.raises(DaemonError) as caught:
        run(daemon, inpaint_request)
    return caught.value


@pytest.mark.parametrize(("engine", "fields", "family"), [
    ("sd-inpaint", {}, "sd-inpaint"),
    ("sd", {}, "sd"),
    ("sd-file", {}, "sd"),
    ("sdxl-inpaint", {}, "sdxl-inpaint"),
    ("sdxl-refined", {"refiner_strength": 0.4}, "sdxl-inpaint"),
    ("kandinsky", {}, "kandinsky22-inpaint"),
    ("controlnet", {"controlnet_conditioning_scale": 0.8}, "sd-controlnet-inpaint"),
    ("flux2-klein", {}, "flux2-klein-inpaint"),  # step-distilled: no guidance_scale
    ("z-image", {"guidance_scale": 0.0}, "z-image-inpaint"),
    ("qwen-image", {"guidance_scale": 4.0, "negative_prompt": "blurry"}, "qwen-image-inpaint"),
    ("sd3", {"guidance_scale": 4.5, "negative_prompt": "blurry", "strength": 0.9}, "sd3-inpaint"),
    ("flux-fill", {"guidance_scale": 30.0}, "flux-fill"),
    ("flux-kontext", {"guidance_scale": 2.5, "prompt": "make it a red balloon"}, "flux-kontext-inpaint"),
    ("chroma", {"guidance_scale": 3.0, "negative_prompt": "blurry"}, "chroma-inpaint"),
])
def test_each_family_through_the_daemon(daemon: tuple[str, str], engines: dict[str, DiffusersEngine], engine: str,
                                        fields: dict[str, Any], family: str) -> None:
    sent = request(engine, **fields)
    first = [whole_crop(variant, sent) for variant in run(daemon, sent)]
    again = [whole_crop(variant, sent) for variant in run(daemon, request(engine, job_id="again", **fields))]
    image, mask = astronaut_crop()
    rgba = np.dstack([image, np.full(mask.shape, 255, np.uint8)])
    variants, repeated = [crop for crop, _ in first], [crop for crop, _ in again]
    blend = first[0][1]
    assert [v.shape for v in variants] == [rgba.shape] * 2
    for variant in variants:
        np.testing.assert_array_equal(variant[blend == 0], rgba[blend == 0])  # unmasked pixels exactly the request's
    for variant, same in zip(variants, repeated, strict=True):
        np.testing.assert_array_equal(variant, same)  # same seed, same pixels
    assert np.abs(variants[0][mask == 255].astype(int) - variants[1][mask == 255]).mean() > 1  # the seeds differ
    info = engines[engine].info()
    assert (info.family, info.available, info.detail.startswith("loaded on cpu")) == (family, True, True)
    assert info.refiner == FAMILY_STRATEGIES[Family(family)].refinable
    assert info.options == FAMILY_STRATEGIES[Family(family)].options()


def test_each_family_lists_the_options_it_uses() -> None:
    """The handshake's ``options``: the table's rows in its order; the ControlNet scale only for ControlNet, no
    strength, LoRAs or refining pass for Kandinsky, no scheduler or refining pass for the flow-matching families
    (:class:`daemon.engines.flow.FlowStrategy`), no negative prompt where the pipeline has none, no guidance for the
    step-distilled FLUX.2 klein, and every family uses what every request needs."""
    from gimp_inpaint.daemon.engines.flow import FlowStrategy

    every = {"engine", "prompt", "num_inference_steps", "guidance_scale", "seed", "num_variants", "grow", "feather"}
    assert "guidance_scale" in FLUX2_KLEIN_BASE.options()
    no_negative_prompt = {Family.FLUX_FILL, Family.FLUX_KONTEXT_INPAINT, Family.FLUX2_KLEIN_INPAINT}
    for family, strategy in FAMILY_STRATEGIES.items():
        used = strategy.options()
        flow = isinstance(strategy, FlowStrategy)
        guided = family is not Family.FLUX2_KLEIN_INPAINT  # its base variants are: FLUX2_KLEIN_BASE
        assert used == [name for name in FILL_OPTIONS if name in used], family
        assert every - {"guidance_scale"} <= set(used) and ("guidance_scale" in used) == guided, family
        assert ("controlnet_conditioning_scale" in used) == (family is Family.SD_CONTROLNET_INPAINT)
        assert ("scheduler" in used) == (not flow), family
        assert ("negative_prompt" in used) == (family not in no_negative_prompt), family
        for option in ("strength", "loras"):
            assert (option in used) == (family is not Family.KANDINSKY22_INPAINT), (family, option)
        assert ("refiner_strength" in used) == (family is not Family.KANDINSKY22_INPAINT and not flow), family


def test_controlnet_and_plain_sd_share_the_base_modules(daemon: tuple[str, str], engines: dict[str, DiffusersEngine],
                                                        pool: ModelPool) -> None:
    from diffusers import StableDiffusionControlNetInpaintPipeline, StableDiffusionInpaintPipeline

    for name in ("sd", "controlnet"):
        run(daemon, request(name, num_variants=1))
    plain, controlnet = engines["sd"].pipeline, engines["controlnet"].pipeline
    assert type(plain) is StableDiffusionInpaintPipeline
    assert type(controlnet) is StableDiffusionControlNetInpaintPipeline
    for module in ("unet", "vae", "text_encoder"):
        assert getattr(controlnet, module) is getattr(plain, module)
    assert engines["sd"].base_key == engines["controlnet"].base_key
    stages: list[str] = []
    engines["controlnet"].load(lambda stage, step, total: stages.append(stage))
    assert stages == []  # warm: nothing loads, nothing is reported
    assert pool.load_counts[engines["sd"].base_key] == 1  # the source loaded once for both engines
    both = pool.used_bytes([engines["sd"].base_key, engines["controlnet"].main_key])
    assert both == pool.used_bytes([engines["sd"].base_key]) + sum(
        p.numel() * p.element_size() for p in [*controlnet.controlnet.parameters(), *controlnet.controlnet.buffers()])


def test_refiner_shares_vae_and_second_text_encoder(daemon: tuple[str, str], engines: dict[str, DiffusersEngine],
                                                   pool: ModelPool) -> None:
    run(daemon, request("sdxl-refined", num_variants=1, refiner_strength=0.5))
    engine = engines["sdxl-refined"]
    base, refiner = engine.pipeline, pool.peek(engine.refiner_key).pipeline
    assert refiner.vae is base.vae and refiner.text_encoder_2 is base.text_encoder_2
    assert refiner.unet is not base.unet and refiner.text_encoder is None


@pytest.mark.parametrize("engine", ["sd-inpaint", "sd", "sdxl-refined", "controlnet"])
def test_refining_pass_changes_pixels_and_is_counted(engines: dict[str, DiffusersEngine], engine: str) -> None:
    """``refiner_strength`` adds a pass (SDXL refiner, img2img of a 4-channel model, a second inpainting pass of
    a 9-channel one); its steps are in :meth:`prepare`'s count and reported."""
    _, mask = astronaut_crop()
    results = {}
    for share in (0.0, 0.5):
        variant = job(3, prompt="a red balloon", refiner_strength=share)
        reports: list[tuple[int, int]] = []
        results[share] = engines[engine].inpaint(variant, lambda step, total, r=reports: r.append((step, total)),
                                                 lambda: False)
        total = engines[engine].prepare(variant)
        assert reports == [(step, total) for step in range(1, total + 1)]
    assert np.abs(results[0.0][mask == 255].astype(int) - results[0.5][mask == 255]).mean() > 1


def test_kandinsky_reports_its_decoder_steps(engines: dict[str, DiffusersEngine]) -> None:
    image, _ = astronaut_crop()
    variant = job(1, prompt="a red balloon", guidance_scale=4.0, num_inference_steps=5)
    reports: list[tuple[int, int]] = []
    out = engines["kandinsky"].inpaint(variant, lambda step, total: reports.append((step, total)), lambda: False)
    assert out.shape == image.shape and engines["kandinsky"].prepare(variant) == 5
    assert reports == [(step, 5) for step in range(1, 6)]
    reports.clear()  # its pipelines ignore _interrupt: the step callback raises instead
    with pytest.raises(JobCancelled):
        engines["kandinsky"].inpaint(variant, lambda step, total: reports.append((step, total)),
                                     lambda: bool(reports))
    assert reports == [(1, 5)]


@pytest.mark.parametrize(("engine", "fields", "needle"), [
    ("sd-inpaint", {"controlnet_conditioning_scale": 0.5}, "ControlNet"),
    ("kandinsky", {"strength": 0.6}, "strength"),
    ("kandinsky", {"refiner_strength": 0.3}, "refin"),
    ("kandinsky", {"loras": {"any": 1.0}}, "LoRA"),
    ("kandinsky", {"prompt": "a (red)1.5 balloon"}, "weighting"),
    ("flux-fill", {"loras": {"sd-lora": 1.0}}, "made for sd models"),
    ("flux-fill", {"negative_prompt": "blurry"}, "no negative prompt"),
    ("flux-kontext", {"negative_prompt": "blurry"}, "no negative prompt"),
    ("sd3", {"scheduler": "euler"}, "flow-matching scheduler"),
    ("sd3", {"refiner_strength": 0.3}, "no refining pass"),
    ("chroma", {"prompt": "a (red)1.5 balloon"}, "weighting"),
])
def test_options_the_model_cannot_honour_are_incompatible(daemon: tuple[str, str], engine: str,
                                                          fields: dict[str, Any], needle: str) -> None:
    error = daemon_error(daemon, request(engine, **fields))
    assert error.code is ErrorCode.INCOMPATIBLE and needle in str(error)


def test_handshake_knows_families_before_anything_loads(engines: dict[str, DiffusersEngine], tmp_path: Path,
                                                        tiny_sdxl_inpaint_model: Path) -> None:
    """An ``auto`` model's family comes from its folder's JSON files (no torch work), or from a cached hub
    snapshot; a local path with nothing there is reported unavailable up front."""
    import shutil

    from gimp_inpaint.daemon.engines.families import family_from_index

    expected = {"sd-inpaint": "sd-inpaint", "sd": "sd", "sdxl-inpaint": "sdxl-inpaint",
                "kandinsky": "kandinsky22-inpaint"}
    for name, family in expected.items():
        assert family_from_index(Path(engines[name].spec.model)) == family
        fresh = DiffusersEngine(engines[name].spec, Registry(), ModelPool(1), device="cpu")
        assert fresh.info().family == family and fresh.pool.keys() == []
    assert family_from_index(tmp_path) is None  # no model_index.json
    assert DiffusersEngine(ModelSpec("any", "owner/model"), Registry(), ModelPool(1)).info().family is None
    missing = DiffusersEngine(ModelSpec("gone", str(tmp_path / "gone")), Registry(), ModelPool(1), device="cpu")
    assert not missing.info().available and "does not exist" in missing.info().detail

    snapshot = tmp_path / "hub" / "models--someone--tiny-xl" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_sdxl_inpaint_model, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    from unittest import mock

    from huggingface_hub import constants

    with mock.patch.object(constants, "HF_HUB_CACHE", str(tmp_path / "hub")):
        hub = DiffusersEngine(ModelSpec("xl", "someone/tiny-xl"), Registry(), ModelPool(1), device="cpu")
    assert hub.info().family == "sdxl-inpaint"


def test_a_refining_pass_without_steps_says_what_to_raise(daemon: tuple[str, str]) -> None:
    error = daemon_error(daemon, request("sd", refiner_strength=0.3))  # int(3 × 0.3) = 0 refining steps
    assert error.code is ErrorCode.INVALID_REQUEST
    assert "refiner_strength to ≥ 0.333" in str(error) and "num_inference_steps to ≥ 4" in str(error)


def test_single_file_family_is_read_from_the_header(tiny_sd_single_file: Path, tiny_inpaint_model: Path,
                                                     tmp_path: Path) -> None:
    from gimp_inpaint.daemon.engines.families import family_of_single_file

    assert family_of_single_file(tiny_sd_single_file).family is Family.SD
    for name in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        with pytest.raises(EngineLoadError, match="none of the supported families"):  # diffusers-layout keys
            family_of_single_file(tiny_inpaint_model / name)
    not_safetensors = tmp_path / "broken.safetensors"
    not_safetensors.write_bytes(b"not a header")
    with pytest.raises(EngineLoadError, match="cannot read the checkpoint"):
        family_of_single_file(not_safetensors)


def test_controlnet_on_an_sdxl_model_is_a_clear_load_error(tiny_sdxl_inpaint_model: Path,
                                                           tiny_controlnet_model: Path) -> None:
    engine = DiffusersEngine(ModelSpec("xl-cn", str(tiny_sdxl_inpaint_model), family="sd-controlnet-inpaint",
                                       controlnet=str(tiny_controlnet_model)), Registry(), ModelPool(10**11),
                             device="cpu")
    with pytest.raises(EngineLoadError, match=r"StableDiffusionControlNetInpaintPipeline\) is for SD 1\.x/2\.x"):
        engine.load()
    assert not engine.info().available


def test_out_of_memory_evicts_the_others_and_retries_once(tiny_inpaint_model: Path, tiny_sd_model: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    class OutOfMemoryError(RuntimeError):
        """Named like torch's, which is how the worker and the engine recognise it."""

    pool = ModelPool(10**11)
    engine = DiffusersEngine(ModelSpec("a", str(tiny_inpaint_model)), Registry(), pool, device="cpu")
    other = DiffusersEngine(ModelSpec("b", str(tiny_sd_model)), Registry(), pool, device="cpu")
    other.load()
    engine.load()
    original = StableDiffusionInpaintPipeline.__call__
    failures = [OutOfMemoryError("CUDA out of memory"), None]

    def failing_once(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        failure = failures.pop(0) if failures else None
        if failure is not None:
            raise failure
        return original(pipe, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionInpaintPipeline, "__call__", failing_once)
    image, _ = astronaut_crop()
    variant = job(1, num_inference_steps=2)
    assert engine.inpaint(variant, lambda step, total: None, lambda: False).shape == image.shape
    assert pool.keys() == [engine.base_key]  # the other model was evicted
    failures[:] = [OutOfMemoryError("again"), OutOfMemoryError("and again")]
    with pytest.raises(OutOfMemoryError, match="and again"):
        engine.inpaint(variant, lambda step, total: None, lambda: False)


class FakePipeline:
    """Records what :func:`daemon.engines.loading.place` does to it; ``hooked``: one of its modules carries an
    accelerate offload hook (it shares an offloaded base's modules)."""

    def __init__(self, hooked: bool = False) -> None:
        self.calls: list[str] = []
        self.vae = self
        module = type("Module", (), {"_hf_hook": object()} if hooked else {})()
        self.components = {"unet": module}

    def to(self, device: Any) -> None:
        self.calls.append(f"to {device}")

    def enable_model_cpu_offload(self, device: Any) -> None:
        self.calls.append(f"offload {device}")

    def enable_tiling(self) -> None:
        self.calls.append("tiling")

    def set_progress_bar_config(self, disable: bool) -> None:
        self.calls.append("quiet")


ON_GPU, OFFLOADED = ["to cuda:0", "quiet"], ["offload cuda:0", "tiling", "quiet"]


@pytest.mark.parametrize(("size", "kept", "hooked", "expected"), [
    (50, 0, False, ON_GPU),
    (1000, 0, False, OFFLOADED),  # larger than the whole budget
    (50, 60, False, OFFLOADED),  # fits alone, not beside the base the engine keeps (an SDXL refiner)
    (30, 60, False, ON_GPU),
    (50, 0, True, OFFLOADED),  # a ControlNet pipeline over an offloaded base
])
def test_placement_offloads_what_does_not_fit(size: int, kept: int, hooked: bool, expected: list[str]) -> None:
    torch = pytest.importorskip("torch")
    from gimp_inpaint.daemon.engines.loading import place

    evicted: list[str] = []
    pool = ModelPool(100, measure=lambda obj: {id(obj): obj if isinstance(obj, int) else 60},
                     release=lambda: evicted.append("released"))
    pool.get("old", object)
    if kept:
        pool.get("base", lambda: kept)  # evicts "old" at once when both do not fit
    pipeline = FakePipeline(hooked)
    offloaded = place(pipeline, torch.device("cuda", 0), pool, size=size, keep=["mine", "base"], compile_unet=False,
                      label="test")
    assert pipeline.calls == expected and offloaded == (expected == OFFLOADED)
    assert evicted == ["released"]  # the older model went either way (next line: only "base" may stay)
    assert pool.keys() == (["base"] if kept else [])


def test_download_progress_reaches_the_load_callback_in_bytes(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's real ``snapshot_download`` with our ``tqdm_class``; only the network is faked: the repo's
    file listing is a cached tree of a commit, and each file's download (``hf_hub_download``) writes 100-byte
    chunks through the per-file bar ``snapshot_download`` hands it, as the real one does."""
    from gimp_inpaint.daemon.engines.loading import byte_progress_class
    from huggingface_hub import _snapshot_download, constants
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
    from huggingface_hub.file_download import repo_folder_name

    sizes = {"model_index.json": 300, "unet/diffusion_pytorch_model.safetensors": 200}
    commit = "0123456789abcdef0123456789abcdef01234567"
    write_tree_cache(str(tmp_path / repo_folder_name(repo_id="owner/model", repo_type="model")), commit,
                     {name: TreeCacheEntry(size=size, blob_id=name) for name, size in sizes.items()})

    def fake_download(repo_id: str, filename: str, *, tqdm_class: Any, **kwargs: Any) -> str:
        with tqdm_class(total=sizes[filename], initial=0) as bar:
            for _ in range(sizes[filename] // 100):
                bar.update(100)
        return str(tmp_path / filename)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_snapshot_download, "hf_hub_download", fake_download)
    reports: list[tuple[str, int, int]] = []
    _snapshot_download.snapshot_download("owner/model", revision=commit, cache_dir=tmp_path, max_workers=1,
                                         tqdm_class=byte_progress_class(lambda *report: reports.append(report)))
    assert [stage for stage, _, _ in reports] == ["download"] * 5
    assert [done for _, done, _ in reports] == [100, 200, 300, 400, 500]  # bytes, over both files
    assert reports[-1] == ("download", 500, 500)  # the total grew to the sum of the sizes


def repo_files(folder: Path) -> list[str]:
    """The files of a pipeline folder as a hub repo lists them (``/``-separated paths)."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


EXTRA_REPO_FILES = [
    "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
    "text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin",
    "unet/diffusion_flax_model.msgpack", "vae/model.onnx", "README.md", "sd-v1-5-inpainting.ckpt", ".gitattributes",
]
"""What a real hub repo holds beside a pipeline's own files: fp16 weights, pickled, Flax and ONNX ones, a
single-file checkpoint."""


@pytest.mark.parametrize("variant", ["", "fp16"])
def test_the_prefetch_asks_for_the_files_diffusers_downloads(tiny_inpaint_model: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    """:func:`daemon.engines.loading.pipeline_patterns` gives ``snapshot_download`` the patterns
    ``DiffusionPipeline.download`` itself gives it (diffusers' network calls faked here, in the test only)."""
    from diffusers import DiffusionPipeline
    from diffusers.pipelines import pipeline_utils
    from gimp_inpaint.daemon.engines.loading import INDEX_FILE, pipeline_patterns

    filenames = [*repo_files(tiny_inpaint_model), *EXTRA_REPO_FILES]
    snapshot = tmp_path / "snapshot"  # only the index: diffusers finds the pipeline not cached and downloads
    snapshot.mkdir()
    (snapshot / INDEX_FILE).write_bytes((tiny_inpaint_model / INDEX_FILE).read_bytes())
    asked: dict[str, Any] = {}

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        asked.update(kwargs)
        return str(snapshot)

    monkeypatch.setattr(pipeline_utils, "_resolve_revision", lambda *args, **kwargs: None)
    monkeypatch.setattr(pipeline_utils, "model_info", lambda *args, **kwargs: SimpleNamespace(
        siblings=[SimpleNamespace(rfilename=name) for name in filenames]))
    monkeypatch.setattr(pipeline_utils, "hf_hub_download", lambda *args, **kwargs: str(snapshot / INDEX_FILE))
    monkeypatch.setattr(pipeline_utils, "snapshot_download", fake_snapshot_download)
    DiffusionPipeline.download("owner/model", variant=variant or None)

    index = json.loads((tiny_inpaint_model / INDEX_FILE).read_text(encoding="utf-8"))
    allow, ignore = pipeline_patterns(index, filenames, variant or None)
    assert sorted(allow) == sorted(asked["allow_patterns"]) and sorted(ignore) == sorted(asked["ignore_patterns"])
    weights = "unet/diffusion_pytorch_model.fp16.safetensors" if variant else "unet/diffusion_pytorch_model.safetensors"
    assert weights in allow and not [name for name in allow if name.endswith((".bin", ".ckpt", ".msgpack"))]
    assert "*.onnx" in ignore and "*.bin" in ignore


def test_a_hub_pipeline_downloads_with_byte_progress_then_diffusers_has_the_last_word(
        tiny_inpaint_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`daemon.engines.loading.download_pipeline`: ``snapshot_download`` gets diffusers' selection and our
    ``tqdm_class`` (its byte bar becomes download progress), then ``DiffusionPipeline.download`` returns the folder;
    a prefetch that fails leaves the download to diffusers. The hub is faked; nothing of diffusers is patched."""
    import huggingface_hub
    from diffusers import DiffusionPipeline
    from gimp_inpaint.daemon.engines import loading
    from huggingface_hub import constants

    filenames = repo_files(tiny_inpaint_model)
    snapshots: list[dict[str, Any]] = []
    finished: list[tuple[str, str | None]] = []

    def fake_snapshot_download(repo_id: str, *, allow_patterns: list[str], ignore_patterns: list[str],
                               tqdm_class: Any) -> str:
        snapshots.append({"allow": allow_patterns, "ignore": ignore_patterns})
        files = tqdm_class(total=len(filenames), name="files")  # bars of other names stay silent
        files.update(len(filenames))
        with tqdm_class(total=0, initial=0, name=loading.SNAPSHOT_BYTES_BAR) as bar:
            bar.total += 500  # as huggingface_hub does when a file's download starts
            bar.update(300)
            bar.update(200)
        return str(tiny_inpaint_model)

    def fake_diffusers_download(cls: type, model: str, variant: str | None = None) -> Path:
        finished.append((model, variant))
        return tiny_inpaint_model

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo_id: SimpleNamespace(
        siblings=[SimpleNamespace(rfilename=name) for name in filenames]))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename: str(tiny_inpaint_model / filename))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(DiffusionPipeline, "download", classmethod(fake_diffusers_download))
    reports: list[tuple[str, int, int]] = []
    folder = loading.download_pipeline("owner/model", "", lambda *report: reports.append(report))
    assert folder == str(tiny_inpaint_model) and finished == [("owner/model", None)]
    assert reports == [("download", 300, 500), ("download", 500, 500)]
    index = json.loads((tiny_inpaint_model / loading.INDEX_FILE).read_text(encoding="utf-8"))
    allow, ignore = loading.pipeline_patterns(index, filenames, None)
    assert snapshots == [{"allow": allow, "ignore": ignore}]

    def unreachable(repo_id: str) -> Any:
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    assert loading.download_pipeline("owner/model", "fp16", lambda *report: None) == str(tiny_inpaint_model)
    assert finished[-1] == ("owner/model", "fp16") and len(snapshots) == 1


def test_memory_budget_on_the_cpu_is_half_the_ram() -> None:
    torch = pytest.importorskip("torch")
    from gimp_inpaint.daemon.device import memory_budget_bytes, physical_memory_bytes

    assert memory_budget_bytes(torch.device("cpu")) == physical_memory_bytes() // 2 > 10**8


def test_dtype_choice() -> None:
    torch = pytest.importorskip("torch")
    from gimp_inpaint.daemon.device import torch_dtype_for

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    chosen = {family: torch_dtype_for(cuda, "auto", FAMILY_STRATEGIES[family].cuda_dtype) for family in Family}
    flow = {family for family, strategy in FAMILY_STRATEGIES.items() if isinstance(strategy, FlowStrategy)}
    assert len(flow) == 7 and all(chosen[family] == torch.bfloat16 for family in flow)
    assert all(dtype == torch.float16 for family, dtype in chosen.items() if family not in flow)
    assert torch_dtype_for(cuda) == torch.float16 and torch_dtype_for(cuda, "float32", "bfloat16") == torch.float32
    assert torch_dtype_for(cpu) == torch.float32 and torch_dtype_for(cpu, "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        torch_dtype_for(cpu, "float8")


def test_options_through_the_engine(tiny_sd_model: Path, tiny_sdxl_inpaint_model: Path, tiny_sd_lora: Path,
                                    tiny_sdxl_lora: Path, tiny_sd_embedding: tuple[Path, str]) -> None:
    """Scheduler, LoRAs, embeddings and prompt weighting reach the pipeline (daemon/engines/options.py), with
    :meth:`check` refusing what does not fit and :meth:`prepare` counting the chosen scheduler's steps."""
    from gimp_inpaint.protocol import ProtocolError

    embedding, token = tiny_sd_embedding
    registry = Registry(loras=(LoraSpec("sd-lora", tiny_sd_lora, "sd"), LoraSpec("xl-lora", tiny_sdxl_lora, "sdxl")),
                        embeddings=(EmbeddingSpec("emb", embedding, token, "sd"),))
    pool = ModelPool(10**11)
    sd = DiffusersEngine(ModelSpec("sd", str(tiny_sd_model)), registry, pool, device="cpu")
    xl = DiffusersEngine(ModelSpec("xl", str(tiny_sdxl_inpaint_model)), registry, pool, device="cpu")
    # read from the folder's model_index.json and unet/config.json before anything loads
    assert (sd.info().family, sd.info().loras, pool.keys()) == ("sd", ["sd-lora"], [])
    _, mask = astronaut_crop()

    def generate(engine: DiffusersEngine, **fields: Any) -> np.ndarray:
        variant = job(5, **{"prompt": "a red balloon", **fields})
        engine.check(variant)
        total = engine.prepare(variant)
        reports: list[int] = []
        out = engine.inpaint(variant, lambda step, total: reports.append(step), lambda: False)
        assert len(reports) == total
        return out[mask == 255].astype(int)

    plain = generate(sd)
    info = sd.info()
    assert (info.family, info.loras, info.embeddings) == ("sd", ["sd-lora"], [token])
    assert xl.info().loras == ["xl-lora"] and xl.load() is None and xl.info().loras == ["xl-lora"]
    for fields in ({"scheduler": "euler_a"}, {"loras": {"sd-lora": 1.0}}, {"prompt": f"a {token} balloon"},
                   {"prompt": "a (red)1.6 balloon"}):
        assert np.abs(generate(sd, **fields) - plain).mean() > 0.5, fields
    np.testing.assert_array_equal(generate(sd), plain)  # back to the defaults: the model's own output
    assert generate(xl, prompt="a red++ balloon", loras={"xl-lora": 0.5}).size
    for engine, fields in ((sd, {"loras": {"xl-lora": 1.0}}), (xl, {"loras": {"sd-lora": 1.0}}),
                           (sd, {"loras": {"nope": 1.0}})):
        with pytest.raises(ProtocolError) as caught:
            engine.check(job(1, **fields))
        assert caught.value.code is ErrorCode.INCOMPATIBLE


def test_loading_several_models_reports_load_once(tiny_sdxl_inpaint_model: Path, tiny_sdxl_refiner_model: Path) -> None:
    pool = ModelPool(10**11)
    engine = DiffusersEngine(ModelSpec("xl", str(tiny_sdxl_inpaint_model), refiner=str(tiny_sdxl_refiner_model)),
                             Registry(), pool, device="cpu")
    reports: list[tuple[str, int, int]] = []
    engine.load(lambda *report: reports.append(report))
    assert reports == [("load", 0, 0)]  # local folders: no download
    assert pool.keys() == [engine.base_key, engine.refiner_key]
    shared = pool.used_bytes([engine.base_key]) + pool.used_bytes([engine.refiner_key]) - pool.used_bytes()
    refiner = pool.peek(engine.refiner_key).pipeline
    assert shared == sum(t.numel() * t.element_size() for module in (refiner.vae, refiner.text_encoder_2)
                         for t in [*module.parameters(), *module.buffers()])  # counted once


@pytest.mark.parametrize(("scheduler", "expected"), [("default", 5), ("dpmpp_2m", 4), ("default", 5)])
def test_steps_follow_the_requested_scheduler(engines: dict[str, DiffusersEngine], scheduler: str,
                                              expected: int) -> None:
    """4 steps are 5 timesteps of the model's PNDM scheduler, 4 of DPM++ 2M; counted before the run switches."""
    variant = job(2, scheduler=scheduler)
    reports: list[int] = []
    engines["sd-inpaint"].inpaint(variant, lambda step, total: reports.append(total), lambda: False)
    assert reports == [expected] * expected and engines["sd-inpaint"].prepare(variant) == expected


def test_missing_single_file_fails_clearly(tmp_path: Path) -> None:
    engine = DiffusersEngine(ModelSpec("file", str(tmp_path / "gone.safetensors")), Registry(), ModelPool(10**9),
                             device="cpu")
    with pytest.raises(EngineLoadError, match=r"gone\.safetensors does not exist"):
        engine.load()
    assert "does not exist" in engine.info().detail


def test_a_lora_on_one_engine_does_not_leak_into_an_engine_sharing_its_unet(
        tiny_sd_model: Path, tiny_controlnet_model: Path, tiny_sd_lora: Path) -> None:
    """The ControlNet engine's pipeline is ``from_pipe`` of the plain SD engine's: one UNet. A LoRA one request
    switched on for the SD engine must be off for the next request to the ControlNet engine that names none."""
    registry = Registry(loras=(LoraSpec("sd-lora", tiny_sd_lora, "sd"),))
    pool = ModelPool(10**11)
    sd = DiffusersEngine(ModelSpec("sd", str(tiny_sd_model)), registry, pool, device="cpu")
    controlnet = DiffusersEngine(ModelSpec("cn", str(tiny_sd_model), family="sd-controlnet-inpaint",
                                           controlnet=str(tiny_controlnet_model)), registry, pool, device="cpu")
    def generate(engine: DiffusersEngine, **fields: Any) -> np.ndarray:
        variant = job(5, prompt="a red balloon", num_inference_steps=3, **fields)
        engine.check(variant)
        engine.prepare(variant)
        return engine.inpaint(variant, lambda step, total: None, lambda: False)

    without = generate(controlnet)
    assert controlnet.pipeline.unet is sd.pipeline.unet
    assert not np.array_equal(generate(sd, loras={"sd-lora": 1.0}), generate(sd))  # the LoRA does something
    generate(sd, loras={"sd-lora": 1.0})  # left switched on by the last SD request
    np.testing.assert_array_equal(generate(controlnet), without)


def test_a_controlnet_engine_keeps_its_own_default_scheduler_and_the_base_dtype(
        tiny_sd_model: Path, tiny_controlnet_model: Path) -> None:
    """``from_pipe`` hands over the base's scheduler of the moment and, without a dtype, casts the shared modules
    to float32: the ControlNet engine's "default" stays the model's own scheduler, the base keeps its dtype."""
    import torch

    pool = ModelPool(10**11)
    sd = DiffusersEngine(ModelSpec("sd", str(tiny_sd_model), dtype="bfloat16"), Registry(), pool, device="cpu")
    controlnet = DiffusersEngine(ModelSpec("cn", str(tiny_sd_model), family="sd-controlnet-inpaint", dtype="bfloat16",
                                           controlnet=str(tiny_controlnet_model)), Registry(), pool, device="cpu")
    euler = job(5, prompt="a red balloon", num_inference_steps=3, scheduler="euler")
    sd.check(euler)
    sd.prepare(euler)  # the shared base now runs Euler
    controlnet.load()
    assert type(sd.pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pool.peek(controlnet.main_key).default_scheduler_config["_class_name"] == "PNDMScheduler"  # the model's
    assert sd.pipeline.unet.dtype == controlnet.pipeline.controlnet.dtype == torch.bfloat16


def test_an_sdxl_base_and_refiner_that_only_fit_together_over_budget_stay_warm(
        tiny_sdxl_inpaint_model: Path, tiny_sdxl_refiner_model: Path) -> None:
    """Each fits the budget, both do not: the engine keeps both (placed or offloaded) instead of evicting its own
    base to load its refiner and back, request after request."""
    spec = ModelSpec("xl", str(tiny_sdxl_inpaint_model), refiner=str(tiny_sdxl_refiner_model))
    measuring = ModelPool(10**11)
    DiffusersEngine(spec, Registry(), measuring, device="cpu").load()
    pool = ModelPool(measuring.used_bytes() - 1)
    engine = DiffusersEngine(spec, Registry(), pool, device="cpu")
    for _ in range(2):
        variant = job(5, prompt="a red balloon", refiner_strength=0.5)
        engine.check(variant)
        engine.prepare(variant)
        engine.inpaint(variant, lambda step, total: None, lambda: False)
    assert pool.load_counts == {engine.base_key: 1, engine.refiner_key: 1}
    assert pool.keys() == [engine.base_key, engine.refiner_key]


@pytest.mark.parametrize(("strength", "share"), [(1.0, 0.6), (0.5, 0.6), (0.6, 0.5)])
def test_the_refiner_takes_its_share_of_the_steps_strength_runs(engines: dict[str, DiffusersEngine], strength: float,
                                                                 share: float) -> None:
    """The base hands over at 1 − strength × refiner_strength: together base and refiner run about the steps a
    plain job of that strength runs, the refiner about refiner_strength of them."""
    from gimp_inpaint.daemon.engines.refining import count_steps, handover

    engine = engines["sdxl-refined"]
    variant = job(1, strength=strength, num_inference_steps=20, scheduler="euler", refiner_strength=share)
    assert handover(variant.options) == pytest.approx(1 - strength * share)
    engine.check(variant)
    total = engine.prepare(variant)
    main, refiner = engine.pipeline, engine.pool.peek(engine.refiner_key).pipeline
    assert type(main.scheduler).__name__ == type(refiner.scheduler).__name__ == "EulerDiscreteScheduler"
    plain = count_steps(main.scheduler, 20, strength)
    base = count_steps(main.scheduler, 20, strength, denoising_end=handover(variant.options))
    second = count_steps(refiner.scheduler, 20, denoising_start=handover(variant.options))
    assert base >= 1 and abs(base + second - plain) <= 1 and abs(second - round(plain * share)) <= 1
    assert total == base + second
