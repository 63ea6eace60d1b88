"""The refiner chain: the passes one variant runs, and how many denoising steps they take.

``refiner_strength`` (:class:`protocol.FillOptions`) is the share of the denoising a refining pass does. A family
picks one :class:`Refinement` per request (:meth:`daemon.engines.family.FamilyStrategy.refinement`):

- :class:`NoRefinement`: ``refiner_strength`` 0, the first pass alone;
- :class:`RefinerHandover`: SDXL with a separate refiner (``spec.refiner``), diffusers' "ensemble of expert
  denoisers": the base stops at ``denoising_end`` and hands its latents to the refiner, which starts there;
- :class:`SecondInpaintPass`: a 9-channel inpainting UNet (or a ControlNet pipeline) inpaints again over the first
  pass's pixels, at ``strength = refiner_strength``;
- :class:`ImageToImagePass`: a 4-channel UNet runs image-to-image over the first pass's latents, with the same
  modules (``AutoPipelineForImage2Image.from_pipe``), at ``strength = refiner_strength``.

Each counts the steps it runs (the progress total, one ``callback_on_step_end`` call each) with the schedulers the
request uses, and runs its passes through the engine's :data:`PassRunner`. Importing this module is cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gimp_inpaint.protocol import ErrorCode, FillOptions, ProtocolError

if TYPE_CHECKING:
    from PIL import Image

    from .loaded import LoadedPipeline

PassRunner = Callable[..., Any]
"""``run(pipeline, **call_arguments)``: call a diffusers pipeline and return its first image (PIL, for
``output_type="pil"``; a 1×H×W×3 float32 array in 0…1 for ``"np"``) or latents (1×C×h×w tensor, ``"latent"``);
raises :class:`daemon.engines.base.JobCancelled` when the job was cancelled during the pass and
``ProtocolError(JOB_FAILED)`` when the safety checker blanked it."""


def count_steps(scheduler: Any, num_inference_steps: int, strength: float = 1.0,
                denoising_start: float | None = None, denoising_end: float | None = None) -> int:
    """Denoising steps a pipeline with ``scheduler`` (a template: a fresh copy is made) runs, i.e. the number of
    its ``callback_on_step_end`` calls.

    Without ``denoising_start``: ``int(num_inference_steps × strength)`` of the scheduler's steps, each
    ``scheduler.order`` timesteps (some schedulers have more timesteps than steps: PNDM one more), as
    ``get_timesteps`` of the SD pipelines does. ``denoising_start`` (SDXL refiner): the timesteps below the
    cutoff, one more for an even count on a 2nd-order scheduler; ``denoising_end`` (SDXL base): the timesteps at
    or above the cutoff (``StableDiffusionXLInpaintPipeline.get_timesteps`` and ``__call__``).
    """
    scheduler = type(scheduler).from_config(scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps
    train_steps = scheduler.config.num_train_timesteps
    if denoising_start is None:
        denoising = min(int(num_inference_steps * strength), num_inference_steps)
        timesteps = timesteps[(num_inference_steps - denoising) * scheduler.order:]
    else:
        cutoff = round(train_steps - denoising_start * train_steps)
        count = int((timesteps < cutoff).sum())
        if scheduler.order == 2 and count % 2 == 0:
            count += 1
        timesteps = timesteps[len(timesteps) - count:]
    if denoising_end is not None:
        cutoff = round(train_steps - denoising_end * train_steps)
        timesteps = [t for t in timesteps if t >= cutoff]
    return len(timesteps)


def handover(options: FillOptions) -> float:
    """Where the SDXL base hands over to the refiner, as a fraction of the whole noise schedule (diffusers'
    ``denoising_end`` of the base = ``denoising_start`` of the refiner): ``1 − strength × refiner_strength``.

    The base starts at ``strength`` of the schedule (its ``strength``), so the refiner does ``refiner_strength``
    of the denoising actually run; with ``strength`` 1 this is the guide's ``high_noise_frac`` = 1 − share.
    """
    return 1 - options.strength * options.refiner_strength


def check_denoising(options: FillOptions) -> None:
    """Refuse a request whose first pass would run no denoising step (checked before anything loads).

    Raises:
        ProtocolError(INVALID_REQUEST): ``int(strength × num_inference_steps)`` < 1, with the values that would do.
    """
    steps = options.num_inference_steps
    if min(int(steps * options.strength), steps) < 1:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"strength {options.strength} × {steps} steps runs no denoising step (diffusers runs "
            f"int(num_inference_steps × strength)): raise strength to ≥ {1 / steps:.3g} "
            f"or num_inference_steps to ≥ {int(np.ceil(1 / options.strength))}")


def _check_refining(options: FillOptions, second: int) -> None:
    """Refuse a refining pass that would run no step (``second`` counted, or ``int(steps × share)`` < 1, as for
    strength: diffusers runs that many).

    Raises:
        ProtocolError(INVALID_REQUEST): with the values that would do, or 0 to go without.
    """
    steps, share = options.num_inference_steps, options.refiner_strength
    if second < 1 or int(steps * share) < 1:
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"refiner_strength {share} × {steps} steps runs no refining step: raise refiner_strength to "
            f"≥ {1 / steps:.3g} or num_inference_steps to ≥ {int(np.ceil(1 / share))}, or set it to 0")


@dataclass(frozen=True)
class VariantCall:
    """The call arguments of one variant's passes, at the model's size.

    Attributes:
        options: the request's options.
        image: the crop (PIL RGB), scaled to the model's size; for a 16-bit crop the float image its family's
            pipeline takes (:meth:`daemon.engines.family.FamilyStrategy.float_image`).
        prompts: ``prompt``/``negative_prompt``, or their Compel embeddings
            (:func:`daemon.engines.options.prompt_kwargs`).
        shared: what every pass takes: ``mask_image`` (PIL L, 255 = repaint), ``height``, ``width`` (pixels),
            ``guidance_scale``, ``num_inference_steps``, ``generator`` (the variant's seeded CPU generator) and
            ``callback_on_step_end`` (progress and cancel).
        family: the family's own first-pass arguments (:meth:`daemon.engines.family.FamilyStrategy.call_kwargs`:
            ``strength``, ControlNet's ``control_image`` and scale).
        output_type: what the last pass returns: ``"pil"`` (8-bit) or ``"np"`` (float, for a 16-bit crop).
    """

    options: FillOptions
    image: Image.Image | np.ndarray
    prompts: dict[str, Any]
    shared: dict[str, Any]
    family: dict[str, Any]
    output_type: str = "pil"

    def first_pass(self, **overrides: Any) -> dict[str, Any]:
        """The first pass's arguments: prompts, shared, ``image`` and the family's, then ``overrides``."""
        return {**self.prompts, **self.shared, "image": self.image, **self.family, **overrides}


class Refinement(ABC):
    """The passes of one variant (see the module docstring for the four kinds)."""

    @abstractmethod
    def count(self, options: FillOptions, scheduler: Any, refiner_scheduler: Any = None) -> int:
        """Denoising steps of all passes for ``options``, with ``scheduler`` (the first pass's: a template, not
        changed) and ``refiner_scheduler`` (the separate refiner's, :class:`RefinerHandover` only).

        Raises:
            ProtocolError(INVALID_REQUEST): the refining pass would run no step.
        """

    @abstractmethod
    def run(self, call: VariantCall, run: PassRunner, main: LoadedPipeline, refiner: LoadedPipeline | None) -> Any:
        """Run the passes on ``main`` (and ``refiner``) through ``run``; return the last pass's image (PIL, or the
        float array of ``call.output_type`` ``"np"``)."""


class NoRefinement(Refinement):
    """The first pass alone (``refiner_strength`` 0)."""

    def count(self, options: FillOptions, scheduler: Any, refiner_scheduler: Any = None) -> int:
        """``int(num_inference_steps × strength)`` steps of ``scheduler`` (:func:`count_steps`)."""
        return count_steps(scheduler, options.num_inference_steps, options.strength)

    def run(self, call: VariantCall, run: PassRunner, main: LoadedPipeline, refiner: LoadedPipeline | None) -> Any:
        return run(main.pipeline, **call.first_pass(output_type=call.output_type))


class RefinerHandover(Refinement):
    """Diffusers' SDXL guide: the base denoises down to :func:`handover` (``denoising_end``) and returns latents;
    the refiner (``refiner`` of :meth:`run`) starts there (``denoising_start``) on them. The refiner has only the
    second text encoder, which Compel's conditioning of the base does not fit: it takes the plain prompts."""

    def count(self, options: FillOptions, scheduler: Any, refiner_scheduler: Any = None) -> int:
        steps, cut = options.num_inference_steps, handover(options)
        first = count_steps(scheduler, steps, options.strength, denoising_end=cut)
        second = count_steps(refiner_scheduler, steps, denoising_start=cut)
        _check_refining(options, second)
        return first + second

    def run(self, call: VariantCall, run: PassRunner, main: LoadedPipeline, refiner: LoadedPipeline | None) -> Any:
        assert refiner is not None, "RefinerHandover needs the engine's refiner"
        cut = handover(call.options)
        latents = run(main.pipeline, **call.first_pass(denoising_end=cut, output_type="latent"))
        return run(refiner.pipeline, prompt=call.options.prompt, negative_prompt=call.options.negative_prompt,
                   **call.shared, image=latents, denoising_start=cut, output_type=call.output_type)


class _SameModelPass(Refinement):
    """A refining pass of the same model after the first one: :meth:`count` is common to both kinds."""

    def count(self, options: FillOptions, scheduler: Any, refiner_scheduler: Any = None) -> int:
        """The first pass's steps plus ``int(num_inference_steps × refiner_strength)`` of the second, both with
        ``scheduler`` (:func:`count_steps`)."""
        steps = options.num_inference_steps
        second = count_steps(scheduler, steps, options.refiner_strength)
        _check_refining(options, second)
        return count_steps(scheduler, steps, options.strength) + second


class SecondInpaintPass(_SameModelPass):
    """The first pass, then the same inpainting pipeline again over its pixels at ``strength = refiner_strength``
    (the same mask, and for ControlNet the same control image)."""

    def run(self, call: VariantCall, run: PassRunner, main: LoadedPipeline, refiner: LoadedPipeline | None) -> Any:
        first = run(main.pipeline, **call.first_pass(output_type=call.output_type))  # the second pass's image
        return run(main.pipeline, **call.first_pass(image=first, strength=call.options.refiner_strength,
                                                    output_type=call.output_type))


class ImageToImagePass(_SameModelPass):
    """The first pass returns latents; the image-to-image pipeline of the same modules
    (:meth:`daemon.engines.loaded.LoadedPipeline.image_to_image`, with the request's scheduler) refines them at
    ``strength = refiner_strength``, without the mask."""

    def run(self, call: VariantCall, run: PassRunner, main: LoadedPipeline, refiner: LoadedPipeline | None) -> Any:
        latents = run(main.pipeline, **call.first_pass(output_type="latent"))
        unmasked = {key: value for key, value in call.shared.items() if key != "mask_image"}
        return run(main.image_to_image(), **call.prompts, **unmasked, image=latents,
                   strength=call.options.refiner_strength, output_type=call.output_type)
