"""The warm pool: loaded pipelines kept between requests, least recently used evicted first, within a memory budget.

Pure bookkeeping: the pool never imports torch. It holds whatever objects the engines load (the diffusers engine's
:class:`daemon.engines.loaded.LoadedPipeline`: a pipeline with its state, which lives and dies with the entry),
measures them through their ``components`` (diffusers' ``DiffusionPipeline.components``), and counts a module that
several pipelines share — ``from_pipe`` hands the same UNet, VAE and text encoders to a new pipeline — once.
Eviction drops the pool's reference; the memory returns when no other entry holds the module
(:func:`release_device_memory` then asks torch to give cached blocks back).

Engines call it from the daemon's single worker thread; a lock guards the bookkeeping so that :meth:`ModelPool.keys`,
:meth:`ModelPool.peek` and :meth:`ModelPool.used_bytes` may be read from the event loop.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)


def tensor_bytes(tensor: Any) -> int:
    """The bytes ``tensor`` holds in memory, quantized ones at their quantized size.

    - A plain tensor, and diffusers' ``GGUFParameter`` (a ``Parameter`` over the file's uint8 blocks, scales
      included: ``numel`` counts bytes, ``element_size`` is 1): ``numel × element_size``.
    - A wrapper tensor subclass (torchao's quantized weights: ``__tensor_flatten__`` names the inner tensors, int8
      or float8 data and their scales), whose ``numel × element_size`` would count the logical dtype: the sum of
      its inner tensors.
    - bitsandbytes' ``Params4bit``: its packed uint8 data (two weights a byte) plus its ``quant_state``'s absmax,
      code and offset tensors, and those of a nested state (double quantization), which live outside ``.data``.
    """
    if callable(getattr(tensor, "__tensor_flatten__", None)):  # plain tensors and Parameters have none
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    size = int(tensor.numel() * tensor.element_size())
    state = getattr(tensor, "quant_state", None)
    while state is not None:
        size += sum(tensor_bytes(part) for part in (getattr(state, name, None) for name in ("absmax", "code", "offset"))
                    if hasattr(part, "numel"))
        state = getattr(state, "state2", None)
    return size


def component_bytes(pipeline: Any) -> dict[int, int]:
    """``{id(module): bytes}`` of every torch module in ``pipeline.components`` (parameters and buffers, each
    :func:`tensor_bytes`: quantized ones at their quantized size); values without ``parameters``/``buffers``
    (tokenizers, schedulers, None) weigh 0 and are left out. A pipeline without ``components`` is measured as
    itself when it is a module.

    Shared modules have the same ``id``, which is how :class:`ModelPool` counts them once.
    """
    components = getattr(pipeline, "components", None)
    values = components.values() if isinstance(components, Mapping) else [pipeline]
    sizes = {}
    for module in values:
        if hasattr(module, "parameters") and hasattr(module, "buffers"):
            tensors = [*module.parameters(), *module.buffers()]
            sizes[id(module)] = sum(tensor_bytes(t) for t in tensors)
    return sizes


def release_device_memory() -> None:
    """Collect garbage, then return torch's cached GPU blocks (CUDA, MPS) to the driver.

    Does nothing more than ``gc.collect()`` when torch has not been imported (no model was ever loaded).
    """
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()


class ModelPool:
    """Loaded objects by key, in least-recently-used order, evicted to keep their memory within a budget.

    Args:
        budget: the budget in bytes, or a function returning it, called once on first use (so that measuring
            the device, which imports torch, happens only when a model loads).
        measure: ``{component id: bytes}`` of an object (default :func:`component_bytes`).
        release: called after evictions to return freed memory (default :func:`release_device_memory`).

    Attributes:
        load_counts: how many times each key was loaded (a warm hit loads nothing and counts nothing).
    """

    def __init__(self, budget: int | Callable[[], int], *,
                 measure: Callable[[Any], Mapping[int, int]] = component_bytes,
                 release: Callable[[], None] = release_device_memory) -> None:
        self._budget = budget
        self._measure = measure
        self._release = release
        self._entries: OrderedDict[str, tuple[Any, Mapping[int, int]]] = OrderedDict()
        self._lock = threading.RLock()
        self.load_counts: Counter[str] = Counter()

    @property
    def budget_bytes(self) -> int:
        """The budget in bytes (measured on first access when given as a function)."""
        with self._lock:
            if callable(self._budget):
                self._budget = int(self._budget())
                log.info("memory budget of the model pool: %.2f GB", self._budget / 1e9)
            return self._budget

    def keys(self) -> list[str]:
        """Keys of the warm entries, least recently used first."""
        with self._lock:
            return list(self._entries)

    def used_bytes(self, keys: Iterable[str] | None = None) -> int:
        """Bytes of the union of the components of ``keys`` (default: every entry; keys not in the pool count 0);
        shared modules count once."""
        with self._lock:
            union: dict[int, int] = {}
            for key in self._entries if keys is None else keys:
                if key in self._entries:
                    union.update(self._entries[key][1])
            return sum(union.values())

    def peek(self, key: str) -> Any | None:
        """The warm object of ``key`` without changing the LRU order, or None."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry[0]

    def get(self, key: str, load: Callable[[], Any], keep: Iterable[str] = ()) -> Any:
        """The warm object of ``key``, or ``load()``'s result, registered; either way the most recently used.

        After a load, least-recently-used entries other than ``key`` and ``keep`` (what the caller needs with
        it: an SDXL base and its refiner) are evicted until the pool fits its budget; what is kept stays even
        over budget (the engine offloads it). Exceptions of ``load`` propagate and
        register nothing. The lock is not held while ``load`` runs (minutes for a download), so readers such as
        :meth:`peek` never wait for a load; loads themselves come from the single worker thread.
        """
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
        loaded = load()
        sizes = dict(self._measure(loaded))
        with self._lock:
            self._entries[key] = (loaded, sizes)
            self.load_counts[key] += 1
            log.info("loaded %s into the pool (%.2f GB in use of %.2f GB)", key, self.used_bytes() / 1e9,
                     self.budget_bytes / 1e9)
            self._evict_until(lambda: self.used_bytes() <= self.budget_bytes, keep={key, *keep})
            return loaded

    def make_room(self, size_bytes: int, keep: Iterable[str] = ()) -> None:
        """Evict least-recently-used entries outside ``keep`` until ``size_bytes`` more fit in the budget (or
        only ``keep`` is left). Called before freshly loaded weights move onto the device."""
        with self._lock:
            self._evict_until(lambda: self.used_bytes() + size_bytes <= self.budget_bytes, keep=set(keep))

    def evict(self, *keys: str) -> None:
        """Drop each of ``keys`` that is warm, then release memory once (when one was)."""
        with self._lock:
            evicted = [key for key in keys if self._entries.pop(key, None) is not None]
            for key in evicted:
                log.info("evicted %s from the pool", key)
            if evicted:
                self._release()

    def evict_others(self, keep: Iterable[str]) -> None:
        """Drop every entry outside ``keep`` and release memory (the first answer to running out of memory)."""
        with self._lock:
            self._evict_until(lambda: False, keep=set(keep))

    def _evict_until(self, fits: Callable[[], bool], keep: set[str]) -> None:
        evicted = False
        for key in list(self._entries):
            if fits():
                break
            if key not in keep:
                del self._entries[key]
                evicted = True
                log.info("evicted %s from the pool (least recently used)", key)
        if evicted:
            self._release()
