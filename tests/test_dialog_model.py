"""The run-time dialog's pure half (:mod:`plugin_gimp.dialog_model`) and what it reads from the handshake: each
engine's per-family defaults (:attr:`protocol.EngineInfo.defaults`)."""

from __future__ import annotations

import pytest
from gimp_inpaint.daemon.engines.families import FAMILY_STRATEGIES
from gimp_inpaint.protocol import FILL_OPTIONS, EngineInfo, ErrorCode, Family, ProtocolError, Welcome, decode, encode


def engine(name: str = "sd", **fields: object) -> EngineInfo:
    """An available prompt engine named ``name`` with ``fields`` changed."""
    return EngineInfo(**{"name": name, "kind": "diffusers", "model": "m", "available": True, "uses_prompt": True,
                         **fields})


@pytest.mark.parametrize("family", list(FAMILY_STRATEGIES))
def test_each_family_reports_its_steps_and_guidance_and_they_travel(family: Family) -> None:
    defaults = FAMILY_STRATEGIES[family].defaults()
    assert set(defaults) == {"num_inference_steps", "guidance_scale"}
    welcome = Welcome(5, "0", "cpu", [engine(family=family, defaults=defaults)], 1 << 20)
    assert decode(encode(welcome)).engines[0].defaults == defaults


def test_sdxl_and_kandinsky_defaults_differ_from_the_table() -> None:
    table = {name: FILL_OPTIONS[name].default for name in ("num_inference_steps", "guidance_scale")}
    assert FAMILY_STRATEGIES[Family.SD_INPAINT].defaults() == table
    assert FAMILY_STRATEGIES[Family.SDXL_INPAINT].defaults() == {"num_inference_steps": 20, "guidance_scale": 8.0}
    assert FAMILY_STRATEGIES[Family.KANDINSKY22_INPAINT].defaults() == {"num_inference_steps": 100,
                                                                        "guidance_scale": 4.0}


@pytest.mark.parametrize("defaults", [{"prompt": 1.0}, {"seed": 2.5}, {"num_inference_steps": 0},
                                      {"guidance_scale": float("nan")}, {"nonsense": 1.0}])
def test_a_default_that_is_no_value_of_a_number_row_is_refused(defaults: dict[str, float]) -> None:
    with pytest.raises(ProtocolError) as caught:
        engine(defaults=defaults)
    assert caught.value.code is ErrorCode.BAD_MESSAGE
