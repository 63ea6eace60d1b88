"""The warm pool on its own: LRU order, the memory budget, components shared through ``from_pipe`` counted once.

The daemon-level pool tests (three tiny diffusers models, two fit) are in tests/test_families.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from gimp_inpaint.daemon.pool import ModelPool, component_bytes


class FakeTensor:
    def __init__(self, count: int, size: int = 4) -> None:
        self.count, self.size = count, size

    def numel(self) -> int:
        return self.count

    def element_size(self) -> int:
        return self.size


class FakeModule:
    """Quacks like a torch module: ``parameters()`` and ``buffers()``."""

    def __init__(self, params: int, buffers: int = 0) -> None:
        self._params, self._buffers = [FakeTensor(params)], [FakeTensor(buffers, 2)]

    def parameters(self) -> list[FakeTensor]:
        return self._params

    def buffers(self) -> list[FakeTensor]:
        return self._buffers


@dataclass
class FakePipeline:
    components: dict[str, object] = field(default_factory=dict)


def pipeline(unet: int = 100, vae: int = 50) -> FakePipeline:
    """A pipeline of ``4 × (unet + vae)`` bytes of parameters, plus a tokenizer that weighs nothing."""
    return FakePipeline({"unet": FakeModule(unet), "vae": FakeModule(vae), "tokenizer": object(), "safety": None})


def test_component_bytes_counts_parameters_and_buffers() -> None:
    pipe = FakePipeline({"unet": FakeModule(10, buffers=3), "tokenizer": object()})
    assert component_bytes(pipe) == {id(pipe.components["unet"]): 10 * 4 + 3 * 2}


def test_warm_get_loads_nothing_and_keeps_the_object() -> None:
    pool = ModelPool(10_000, release=lambda: None)
    loads = []

    def load() -> FakePipeline:
        loads.append(1)
        return pipeline()

    first = pool.get("a", load)
    assert pool.get("a", load) is first
    assert len(loads) == 1 and pool.load_counts["a"] == 1
    assert pool.used_bytes() == 4 * 150


def test_third_model_evicts_the_least_recently_used() -> None:
    released = []
    pool = ModelPool(2 * 600 + 100, release=lambda: released.append(1))  # two 600-byte pipelines fit, not three
    pool.get("a", pipeline)
    pool.get("b", pipeline)
    pool.get("a", pipeline)  # a is now the most recently used
    pool.get("c", pipeline)
    assert pool.keys() == ["a", "c"]  # b, the least recently used, went
    assert released == [1]
    assert pool.used_bytes() == 1200
    pool.get("b", pipeline)  # back: loaded again, a goes
    assert pool.keys() == ["c", "b"] and pool.load_counts == {"a": 1, "b": 2, "c": 1}


def test_shared_components_count_once_and_survive_eviction_of_their_sibling() -> None:
    pool = ModelPool(1000, release=lambda: None)
    base = pool.get("base", pipeline)
    # from_pipe: a new pipeline around the same UNet and VAE, plus a new 100-parameter ControlNet
    derived = pool.get("controlnet", lambda: FakePipeline({**base.components, "controlnet": FakeModule(100)}))
    assert derived.components["unet"] is base.components["unet"]
    assert pool.used_bytes() == 4 * 150 + 4 * 100  # not 2 × 600 + 400
    assert pool.used_bytes(["controlnet"]) == 1000 and pool.used_bytes(["base"]) == 600
    pool.evict("base")
    assert pool.used_bytes() == 1000  # the UNet and VAE are still held by the ControlNet pipeline


def test_an_object_larger_than_the_budget_stays_alone() -> None:
    pool = ModelPool(500, release=lambda: None)
    pool.get("small", lambda: pipeline(unet=10, vae=10))
    pool.get("huge", pipeline)
    assert pool.keys() == ["huge"]  # evicted everything else, kept itself (the engine offloads it)


def test_make_room_evicts_before_a_load_and_spares_keep() -> None:
    pool = ModelPool(1300, release=lambda: None)
    for key in ("a", "b"):
        pool.get(key, pipeline)
    pool.make_room(600, keep=["a"])
    assert pool.keys() == ["a"]
    pool.make_room(10_000, keep=["a"])
    assert pool.keys() == ["a"]  # never evicts what is kept, even if the room is not there


def test_evict_others_and_a_failed_load() -> None:
    pool = ModelPool(10_000, release=lambda: None)
    for key in ("a", "b", "c"):
        pool.get(key, pipeline)
    pool.evict_others(keep=["b"])
    assert pool.keys() == ["b"]

    def broken() -> FakePipeline:
        raise OSError("no such model")

    with pytest.raises(OSError):
        pool.get("d", broken)
    assert pool.keys() == ["b"] and pool.load_counts["d"] == 0


def test_budget_function_is_called_once_and_lazily() -> None:
    calls = []

    def measure() -> int:
        calls.append(1)
        return 5000

    pool = ModelPool(measure, release=lambda: None)
    assert calls == []
    pool.get("a", pipeline)
    assert pool.budget_bytes == 5000 and calls == [1]


# ---------------------------------------------------------------- through the daemon, on tiny diffusers models

@pytest.mark.diffusers
def test_daemon_keeps_two_of_three_models_warm_within_the_budget(tiny_inpaint_model, tmp_path) -> None:
    """Three copies of the tiny model (three sources, ~equal size) and a budget for two and a half: the third
    model's load evicts the least recently used; a request to a warm model loads nothing."""
    import shutil

    from gimp_inpaint.client.connection import InpaintClient
    from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
    from gimp_inpaint.daemon.registry import ModelSpec, Registry
    from running_daemon import running_daemon
    from test_families import request

    folders = {}
    for name in ("a", "b", "c"):
        folders[name] = tmp_path / name
        shutil.copytree(tiny_inpaint_model, folders[name])
    specs = tuple(ModelSpec(name, str(folder)) for name, folder in folders.items())
    sizes = []

    def measure(pipeline: object) -> dict[int, int]:
        sizes.append(sum(component_bytes(pipeline).values()))
        return component_bytes(pipeline)

    pool = ModelPool(lambda: int(2.5 * sizes[0]), measure=measure)
    engines = {spec.name: DiffusersEngine(spec, Registry(models=specs), pool, device="cpu") for spec in specs}
    keys = {name: engine.main_key for name, engine in engines.items()}

    with running_daemon(tmp_path / "config", list(engines.values())) as (url, token), \
            InpaintClient.connect(url, token, "pytest", timeout=30) as client:
        def fill(name: str) -> None:
            client.inpaint(request(name, num_variants=1, job_id=f"job-{name}-{len(pool.keys())}"))

        fill("a")
        fill("b")
        assert pool.keys() == [keys["a"], keys["b"]] and pool.used_bytes() == sizes[0] + sizes[1]
        fill("a")  # warm: nothing loads, a becomes the most recently used
        assert pool.load_counts == {keys["a"]: 1, keys["b"]: 1} and pool.keys() == [keys["b"], keys["a"]]
        fill("c")  # does not fit beside both: b, the least recently used, goes
        assert pool.keys() == [keys["a"], keys["c"]]
        assert pool.used_bytes() <= pool.budget_bytes
        assert engines["b"].info().detail == "loads on first use"  # the handshake shows it is cold again
        fill("b")  # loads again, evicting a
        assert pool.load_counts == {keys["a"]: 1, keys["b"]: 2, keys["c"]: 1}
        assert pool.keys() == [keys["c"], keys["b"]]
