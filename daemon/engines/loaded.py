"""One loaded diffusers pipeline and everything the daemon keeps about it: :class:`LoadedPipeline`.

The pool (:class:`daemon.pool.ModelPool`) holds these objects, so a pipeline's state lives and dies with its pool
entry: the family it runs as, its pool key, its own default scheduler (captured right after loading, or inherited
from the pipeline it was made from) and the scheduler objects built for requests, its LoRA adapters (which the
pipeline lists itself), the textual-inversion tokens loaded into it, its Compel wrapper, its image-to-image
companion for refining passes, whether it runs with model CPU offload, and which engine's request options it
carries now. Engines that share a pipeline (plain SD and its ControlNet variant share the model source's) share
this object too.

Importing this module is cheap: diffusers is imported inside the methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gimp_inpaint.protocol import FillOptions, Scheduler

from . import options
from .loading import offload

if TYPE_CHECKING:
    import torch

    from ..registry import EmbeddingSpec, LoraSpec
    from .family import FamilyStrategy


class LoadedPipeline:
    """A loaded diffusers pipeline with its state (see the module docstring).

    Args:
        pipeline: the diffusers pipeline, loaded (on the CPU, or already placed).
        strategy: the family it runs as (:mod:`daemon.engines.families`).
        key: its pool key.
        default_scheduler_config: the config scheduler ``default`` rebuilds; None captures the pipeline's scheduler
            now (:func:`daemon.engines.options.default_scheduler_config`), so create it right after loading.

    Attributes:
        pipeline, strategy, key: as given.
        default_scheduler_config: the model's own scheduler config (with ``_class_name``).
        embeddings: tokens of the textual-inversion embeddings loaded into the pipeline.
        offloaded: True when it runs with model CPU offload (set by the engine's placement, or :meth:`offload`).
        applied: ``(engine name, options)`` of the request whose scheduler, LoRAs and embeddings the pipeline has
            now, set by the engine's ``prepare``; None before the first or while one is being applied.
    """

    def __init__(self, pipeline: Any, strategy: FamilyStrategy, *, key: str = "",
                 default_scheduler_config: Mapping[str, Any] | None = None) -> None:
        self.pipeline = pipeline
        self.strategy = strategy
        self.key = key
        self.default_scheduler_config = dict(default_scheduler_config or options.default_scheduler_config(pipeline))
        self.embeddings: set[str] = set()
        self.offloaded = False
        self.applied: tuple[str, FillOptions] | None = None
        self._schedulers: dict[Scheduler, Any] = {}
        self._compel: Any = None
        self._image_to_image: Any = None

    @property
    def components(self) -> Mapping[str, Any]:
        """The pipeline's ``components`` (what the pool measures, :func:`daemon.pool.component_bytes`)."""
        components: Mapping[str, Any] = self.pipeline.components
        return components

    # --- scheduler ---

    def scheduler_for(self, scheduler: Scheduler) -> Any:
        """The scheduler object for ``scheduler``, built on first use from :attr:`default_scheduler_config`
        (:func:`daemon.engines.options.build_scheduler`) and kept; installs nothing.

        Raises:
            ProtocolError(INCOMPATIBLE): as :func:`daemon.engines.options.build_scheduler`.
        """
        built = self._schedulers.get(scheduler)
        if built is None:
            built = self._schedulers[scheduler] = options.build_scheduler(
                scheduler, self.default_scheduler_config, scales_model_input=self.strategy.scales_model_input,
                label=self.strategy.label)
        return built

    def use_scheduler(self, scheduler: Scheduler) -> None:
        """Install :meth:`scheduler_for` ``scheduler`` on the pipeline (Kandinsky: its decoder) and on its
        image-to-image companion, if one was made.

        Raises:
            ProtocolError(INCOMPATIBLE): as :meth:`scheduler_for`.
        """
        built = self.scheduler_for(scheduler)
        options.install_scheduler(self.pipeline, built)
        if self._image_to_image is not None:
            self._image_to_image.scheduler = built

    # --- LoRAs, embeddings, prompt weighting ---

    def apply_loras(self, requested: Mapping[str, float], available: Mapping[str, LoraSpec],
                    all_loras: Mapping[str, LoraSpec]) -> None:
        """Exactly the ``requested`` LoRAs at their weights (:func:`daemon.engines.options.apply_loras`).

        Raises:
            ProtocolError(INCOMPATIBLE): as :func:`daemon.engines.options.apply_loras`.
        """
        options.apply_loras(self.pipeline, requested, available, all_loras=all_loras)

    def load_embeddings(self, prompts: Sequence[str], available: Sequence[EmbeddingSpec]) -> None:
        """The embeddings whose tokens ``prompts`` use, once per pipeline
        (:func:`daemon.engines.options.load_embeddings`, recorded in :attr:`embeddings`).

        Raises:
            ProtocolError(INCOMPATIBLE): as :func:`daemon.engines.options.load_embeddings`.
        """
        options.load_embeddings(self.pipeline, prompts, available, self.embeddings)

    def prompt_kwargs(self, prompt: str, negative_prompt: str) -> dict[str, Any]:
        """The prompt arguments of a call (:func:`daemon.engines.options.prompt_kwargs`), Compel-encoded with this
        pipeline's wrapper (made on the first weighted prompt) when they use weighting syntax; without
        ``negative_prompt`` for a family that takes none (:attr:`FamilyStrategy.takes_negative_prompt`).

        Raises:
            ProtocolError(INCOMPATIBLE): weighting syntax on a family without a
                :attr:`FamilyStrategy.compel_base`.
        """
        base = self.strategy.compel_base
        kwargs = options.prompt_kwargs(lambda: self._compel_for(base), base, prompt, negative_prompt,
                                       family=str(self.strategy.family))
        if not self.strategy.takes_negative_prompt:
            kwargs.pop("negative_prompt", None)
        return kwargs

    def _compel_for(self, base: str | None) -> Any:
        if self._compel is None:
            assert base is not None, "check_weighting refuses weighting without a base"
            self._compel = options.make_compel(self.pipeline, base)
        return self._compel

    # --- refining and memory ---

    def image_to_image(self) -> Any:
        """The image-to-image pipeline of the same modules (``AutoPipelineForImage2Image.from_pipe``: every
        component shared, no new weights, the pipeline's dtype and current scheduler), made on first use and kept;
        :meth:`use_scheduler` keeps its scheduler the pipeline's."""
        if self._image_to_image is None:
            from diffusers import AutoPipelineForImage2Image

            refine = AutoPipelineForImage2Image.from_pipe(self.pipeline, torch_dtype=self.pipeline.dtype)
            refine.set_progress_bar_config(disable=True)
            self._image_to_image = refine
        return self._image_to_image

    def offload(self, device: torch.device) -> None:
        """Switch to model CPU offload and VAE tiling on ``device`` (:func:`daemon.engines.loading.offload`) unless
        it already runs so."""
        if not self.offloaded:
            offload(self.pipeline, device)
            self.offloaded = True
