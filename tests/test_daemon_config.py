"""daemon.config (settings, token) and the command line's pieces in daemon.__main__."""

from __future__ import annotations

import re
import stat
import threading
from pathlib import Path

import pytest
from gimp_inpaint.daemon import __main__ as cli
from gimp_inpaint.daemon.config import ConfigError, Settings, ensure_token, load_settings, token_matches
from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
from gimp_inpaint.daemon.engines.families import FAMILY_STRATEGIES
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.registry import EmbeddingSpec, LoraSpec, ModelSpec
from gimp_inpaint.protocol import DEFAULT_MAX_PIXELS, Family


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings == Settings(config_dir=tmp_path, log_file=tmp_path / "daemon.log")
    assert (settings.host, settings.port, settings.device, settings.threads) == ("127.0.0.1", 7869, "auto", 0)
    assert settings.max_pixels == DEFAULT_MAX_PIXELS and settings.models == {} and settings.tray


def test_default_folders_come_from_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    settings = load_settings()
    assert settings.config_dir == tmp_path / "config" / "gimp-inpaint"
    assert settings.log_file.parent.parent == tmp_path / "state" / "gimp-inpaint"
    assert settings.log_file.name == "daemon.log"


def test_toml_then_command_line(tmp_path: Path) -> None:
    (tmp_path / "daemon.toml").write_text(
        'host = "0.0.0.0"\nport = 9000\ndevice = "cpu"\nthreads = 2\nmax_pixels = 1000000\n'
        '[models.sd15]\nmodel = "stable-diffusion-v1-5/stable-diffusion-inpainting"\n'
        '[models.local]\nmodel = "/models/my-inpaint"\n')
    settings = load_settings(tmp_path, {"port": 7000, "host": None, "models": {"local": "/elsewhere", "xl": "a/b"},
                                        "tray": False})
    assert (settings.host, settings.port, settings.device, settings.threads) == ("0.0.0.0", 7000, "cpu", 2)
    assert settings.max_pixels == 1_000_000 and not settings.tray
    assert {name: spec.model for name, spec in settings.models.items()} == {
        "sd15": "stable-diffusion-v1-5/stable-diffusion-inpainting", "local": "/elsewhere", "xl": "a/b"}
    assert list(settings.models) == ["sd15", "local", "xl"]  # file order, then new command-line models
    assert settings.models["xl"] == ModelSpec("xl", "a/b")  # family read from the model when it loads


REGISTRY_TOML = """
memory_budget_gb = 7.5

[models.sd15-inpaint]
model = "stable-diffusion-v1-5/stable-diffusion-inpainting"
family = "sd-inpaint"

[models.xl]
model = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
variant = "fp16"
refiner = "stabilityai/stable-diffusion-xl-refiner-1.0"
compile = true

[models.kandinsky]
model = "kandinsky-community/kandinsky-2-2-decoder-inpaint"
family = "kandinsky22-inpaint"
dtype = "bfloat16"

[models.civitai]
model = "~/models/dreamshaper_8.safetensors"
family = "sd"
config = "stable-diffusion-v1-5/stable-diffusion-v1-5"

[models.sd15-controlnet]
model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
family = "sd-controlnet-inpaint"
controlnet = "lllyasviel/control_v11p_sd15_inpaint"

[loras.pixel-art]
path = "~/loras/pixel-art.safetensors"
base = "sd"

[loras.xl-film]
path = "/loras/film-xl.safetensors"
base = "sdxl"

[embeddings.bad-hands]
path = "/embeddings/bad-hands.safetensors"
token = "<bad-hands>"
base = "sd"
"""


def test_registry_tables(tmp_path: Path) -> None:
    (tmp_path / "daemon.toml").write_text(REGISTRY_TOML)
    settings = load_settings(tmp_path)
    assert settings.memory_budget_gb == 7.5
    registry = settings.registry
    assert [spec.name for spec in registry.models] == ["sd15-inpaint", "xl", "kandinsky", "civitai", "sd15-controlnet"]
    xl = settings.models["xl"]
    assert (xl.family, xl.variant, xl.refiner, xl.compile, xl.dtype) == (
        None, "fp16", "stabilityai/stable-diffusion-xl-refiner-1.0", True, "auto")  # auto: read from the model
    assert settings.models["civitai"].single_file and not xl.single_file
    assert settings.models["sd15-controlnet"].controlnet == "lllyasviel/control_v11p_sd15_inpaint"
    assert settings.models["sd15-controlnet"].family is Family.SD_CONTROLNET_INPAINT

    def base(family: Family) -> str | None:
        return FAMILY_STRATEGIES[family].base

    assert registry.loras_for(base(Family.SD_CONTROLNET_INPAINT)) == [
        LoraSpec("pixel-art", Path.home() / "loras" / "pixel-art.safetensors", "sd")]
    assert [lora.name for lora in registry.loras_for(base(Family.SDXL_INPAINT))] == ["xl-film"]
    assert registry.loras_for(base(Family.KANDINSKY22_INPAINT)) == [] and registry.loras_for(None) == []
    assert registry.embeddings_for(base(Family.SD)) == [
        EmbeddingSpec("bad-hands", Path("/embeddings/bad-hands.safetensors"), "<bad-hands>", "sd")]
    assert registry.embeddings_for(base(Family.SDXL)) == []
    assert ModelSpec("x", "a/b", family="sdxl").family is Family.SDXL  # the config's strings are converted
    assert ModelSpec("x", "a/b", family="auto").family is None


@pytest.mark.parametrize(("text", "words"), [
    ("colour = 'blue'\n", "unknown key 'colour'"),
    ("port = '80'\n", "port must be of type int"),
    ("threads = true\n", "threads must be of type int"),
    ("port = 70000\n", "port=70000 is outside"),
    ("device = 'tpu'\n", "device='tpu'"),
    ("device = 'cuda:'\n", "device='cuda:'"),
    ("device = 'cuda:x'\n", "device='cuda:x'"),
    ("device = 'cpu:0'\n", "device='cpu:0'"),
    ("models = 3\n", "'models' must be a table"),
    ("[models.x]\npath = 'a/b'\n", "[models.x]: unknown keys ['path']"),
    ("[models.x]\nfamily = 'sd'\n", "[models.x]: model = \"...\" is required"),
    ("[models.x]\nmodel = 'a/b'\nfamily = 'sd3'\n", "family = 'sd3' is not one of"),
    ("[models.x]\nmodel = 'a/b'\ndtype = 'int4'\n", "dtype = 'int4' is not one of"),
    ("[models.x]\nmodel = 'a/b'\ncompile = 'yes'\n", "compile must be a bool"),
    ("[models.x]\nmodel = 'a/b'\nfamily = 'sdxl'\ncontrolnet = 'c/n'\n", "a controlnet goes with family"),
    ("[models.x]\nmodel = 'a/b'\nfamily = 'sd-controlnet-inpaint'\n", "a controlnet goes with family"),
    ("[models.x]\nmodel = 'a/b'\nfamily = 'sd'\nrefiner = 'r/f'\n", "refiner is for SDXL models"),
    ("[models.x]\nmodel = 'a/b'\nconfig = 'c/f'\n", "config is only for single-file"),
    ("[loras.x]\npath = 'x.safetensors'\nbase = 'sd4'\n", "base = 'sd4' is not one of sd, sdxl, sd3, flux"),
    ("[models.m]\nmodel = 'a/b'\nnon_commercial = true\n", "non_commercial goes with licence"),
    ("[loras.x]\npath = 'x.safetensors'\n", "[loras.x]: base = \"...\" is required"),
    ("[embeddings.x]\npath = 'x.pt'\nbase = 'sd'\n", "[embeddings.x]: token = \"...\" is required"),
    ("[embeddings.a]\npath = 'a.pt'\ntoken = '<t>'\nbase = 'sd'\n[embeddings.b]\npath = 'b.pt'\ntoken = '<t>'\n"
     "base = 'sd'\n", "use the same token"),
    ("memory_budget_gb = -1\n", "memory_budget_gb=-1 must be ≥ 0"),
    ("memory_budget_gb = '8'\n", "memory_budget_gb must be of type int or float"),
    ("[models.opencv]\nmodel = 'a/b'\n", "not be 'opencv'"),
    ("port = \n", "daemon.toml"),
])
def test_bad_toml_is_reported_with_file_and_key(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "daemon.toml").write_text(text)
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path)
    assert words in str(error.value) and str(tmp_path / "daemon.toml") in str(error.value)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_devices_accepted(tmp_path: Path, device: str) -> None:
    (tmp_path / "daemon.toml").write_text(f'device = "{device}"\n')
    assert load_settings(tmp_path).device == device
    assert load_settings(tmp_path, {"device": device}).device == device


def test_bad_overrides(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_pixels=0"):
        load_settings(tmp_path, {"max_pixels": 0})
    with pytest.raises(ConfigError, match="unknown settings"):
        load_settings(tmp_path, {"colour": "blue"})


def test_token_created_once_with_mode_0600(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "gimp-inpaint"
    token = ensure_token(folder)
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert stat.S_IMODE((folder / "token").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert ensure_token(folder) == token  # read back, not replaced
    assert ensure_token(tmp_path / "other") != token


def _race_ensure_token(folder: Path, callers: int) -> tuple[list[str], list[Exception]]:
    """Call ``ensure_token(folder)`` from ``callers`` threads released at once; returns their tokens and errors."""
    start = threading.Barrier(callers)
    tokens: list[str] = []
    errors: list[Exception] = []

    def create() -> None:
        start.wait()
        try:
            tokens.append(ensure_token(folder))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tokens, errors


def test_concurrent_token_creation_agrees_on_one_complete_token(tmp_path: Path) -> None:
    """A daemon and an installer starting at once: every caller gets the same token, none sees an empty file."""
    for round_number in range(20):
        folder = tmp_path / f"round-{round_number}"
        tokens, errors = _race_ensure_token(folder, 6)
        assert errors == [] and len(tokens) == 6 and len(set(tokens)) == 1, (errors, tokens)
        assert (folder / "token").read_text() == tokens[0] + "\n"
        assert [path.name for path in folder.iterdir()] == ["token"]  # no temporary file left behind
        assert stat.S_IMODE((folder / "token").stat().st_mode) == 0o600


def test_token_file_permissions_tightened_and_empty_rejected(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("abc123\n")
    path.chmod(0o644)
    assert ensure_token(tmp_path) == "abc123"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        ensure_token(tmp_path)


def test_token_matches() -> None:
    assert token_matches("a" * 64, "a" * 64)
    assert not token_matches("a" * 64, "a" * 63 + "b")
    assert not token_matches("a" * 64, "")
    assert not token_matches("a" * 64, "ä" * 64)  # non-ASCII is compared as bytes, not an error


def test_command_line_options(tmp_path: Path) -> None:
    args = cli.parse_args(["--port", "0", "--no-tray", "--config-dir", str(tmp_path), "--model", "a=x/y",
                           "--model", "b=/m/b=c", "--device", "cpu", "--threads", "3"])
    assert (args.port, args.no_tray, args.config_dir, args.device, args.threads) == (0, True, tmp_path, "cpu", 3)
    assert args.model == [("a", "x/y"), ("b", "/m/b=c")]
    assert cli.parse_args([]).port is None  # left to daemon.toml
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", "no-equals-sign"])
    assert cli.parse_args(["--device", "cuda:1"]).device == "cuda:1"
    for device in ("tpu", "cuda:", "cuda:one", "cuda1"):
        with pytest.raises(SystemExit):
            cli.parse_args(["--device", device])


def test_engines_in_handshake_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(tmp_path, {"models": {"one": "a/b", "two": "/models/two"}, "device": "cpu",
                                        "threads": 2})
    engines = cli.build_engines(settings)
    assert [engine.name for engine in engines] == ["one", "two", "migan", "opencv"]
    assert isinstance(engines[0], DiffusersEngine) and isinstance(engines[3], OpenCVEngine)
    assert (engines[1].spec.model, engines[1].device, engines[1].torch_threads) == ("/models/two", "cpu", 2)
    assert engines[0].pool is engines[1].pool  # one warm pool, one budget, for every model

    monkeypatch.setattr(cli, "diffusers_available", lambda: True)
    assert [engine.name for engine in cli.build_engines(load_settings(tmp_path))] == ["sd15-inpaint", "migan",
                                                                                      "opencv"]
    monkeypatch.setattr(cli, "diffusers_available", lambda: False)
    assert [engine.name for engine in cli.build_engines(load_settings(tmp_path))] == ["migan", "opencv"]


def test_main_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "daemon.toml").write_text("port = 'x'\n")
    assert cli.main(["--no-tray", "--config-dir", str(tmp_path)]) == 2
    assert "port must be of type int" in capsys.readouterr().err


def test_preload_names_a_model_of_the_file_or_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "daemon.toml").write_text('preload = "local"\n[models.local]\nmodel = "/models/my-inpaint"\n')
    assert load_settings(tmp_path).preload == "local"
    assert load_settings(tmp_path, {"preload": ""}).preload == ""  # --preload "" turns the file's off
    assert load_settings(tmp_path, {"preload": "xl", "models": {"xl": "a/b"}}).preload == "xl"
    other = tmp_path / "other"
    other.mkdir()
    assert load_settings(other).preload == ""  # off by default
    assert load_settings(other, {"preload": "sd15-inpaint"}).preload == "sd15-inpaint"  # the default model
    (other / "daemon.toml").write_text('preload = "xl"\n')  # a model only the command line adds
    assert load_settings(other, {"models": {"xl": "a/b"}}).preload == "xl"
    assert cli.parse_args(["--preload", "local"]).preload == "local"
    assert cli.parse_args([]).preload is None  # left to daemon.toml


def test_unknown_preload_is_a_config_error_naming_the_models(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "daemon.toml"
    toml.write_text('preload = "sd21"\n[models.sd15]\nmodel = "a/b"\n[models.xl]\nmodel = "c/d"\n')
    with pytest.raises(ConfigError) as error:
        load_settings(tmp_path)
    assert str(error.value) == f"{toml}: preload = 'sd21' is not a model of the registry; the models are sd15, xl"
    with pytest.raises(ConfigError, match=r"^command line: preload = 'opencv' is not a model"):
        load_settings(tmp_path, {"preload": "opencv"})  # opencv loads nothing: not a registry model
    with pytest.raises(ConfigError, match=r"the models are sd15-inpaint$"):
        load_settings(tmp_path / "none", {"preload": "sd15"})  # no models: the default one
    toml.write_text("preload = 1\n")
    with pytest.raises(ConfigError, match="preload must be of type str"):
        load_settings(tmp_path)
    toml.write_text('preload = "sd21"\n')
    assert cli.main(["--no-tray", "--config-dir", str(tmp_path)]) == 2
    assert "preload = 'sd21' is not a model of the registry; the models are sd15-inpaint" in capsys.readouterr().err
