"""Every model family at 16 bits (issue 12) through the real daemon, on the tiny random-weight pipelines of
``tests/test_families.py`` (its fixtures): a 16-bit crop's variants are 16-bit, their fill holds values that are not
8-bit levels (the pipelines take the crop as floats and return floats), and every unmasked pixel is the request's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gimp_inpaint.daemon.compositing import LEVEL_STEP
from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
from gimp_inpaint.protocol import InpaintRequest, Plane
from test_families import daemon, engines, pool  # noqa: F401 - the fixtures, shared with that module's tests
from test_families import request as family_request
from test_families import run as run_in_daemon

pytestmark = pytest.mark.diffusers


def deep_request(engine: str, **fields: Any) -> tuple[InpaintRequest, np.ndarray]:
    """``test_families``'s request at 16 bits: each level × 257 plus a ramp of 0…256 across the crop; and that
    crop (H×W×4 uint16)."""
    sent = family_request(engine, num_variants=1, **fields)
    height, width = sent.image.height, sent.image.width
    levels = np.frombuffer(sent.image.data, np.uint8).reshape(height, width, 4).astype(np.uint32)
    ramp = np.linspace(0, 256, width).round().astype(np.uint32)[None, :, None]
    deep = np.minimum(levels * LEVEL_STEP + ramp, 65535).astype(np.uint16)
    deep[..., 3] = 65535
    image = Plane(width, height, 4, deep.astype("<u2").tobytes(), bits=16)
    return InpaintRequest(sent.job_id, sent.x, sent.y, image, sent.mask, sent.options), deep


@pytest.mark.parametrize(("engine", "fields"), [
    ("sd-inpaint", {}),
    ("sd", {}),
    ("sdxl-inpaint", {}),
    ("sdxl-refined", {"refiner_strength": 0.4}),
    ("kandinsky", {}),
    ("controlnet", {"controlnet_conditioning_scale": 0.8}),
    ("controlnet", {"controlnet_conditioning_scale": 0.8, "refiner_strength": 0.4}),
    ("sd-inpaint", {"refiner_strength": 0.4}),
    ("sd", {"refiner_strength": 0.4}),
    ("sd3", {}),
    ("flux-fill", {}),
    ("flux-kontext", {}),
    ("chroma", {}),
])
def test_each_family_fills_a_16_bit_crop_at_16_bits(daemon: tuple[str, str],  # noqa: F811
                                                    engines: dict[str, DiffusersEngine],  # noqa: F811
                                                    engine: str, fields: dict[str, Any]) -> None:
    sent, crop = deep_request(engine, **fields)
    (variant,) = run_in_daemon(daemon, sent)
    assert variant.image.bits == 16 and engines[engine].info().bits == 16
    pixels = np.frombuffer(variant.image.data, "<u2").reshape(variant.image.height, variant.image.width, 4)
    blend = np.frombuffer(variant.mask.data, np.uint8).reshape(pixels.shape[:2])
    top, left = variant.y - sent.y, variant.x - sent.x
    own = crop[top:top + pixels.shape[0], left:left + pixels.shape[1]]
    np.testing.assert_array_equal(pixels[blend == 0], own[blend == 0])
    filled = pixels[blend == 255][:, :3]
    between = filled[(filled > 0) & (filled < 65535)]  # a random-weight model saturates some: 0 and 65535 are levels
    assert between.size > filled.size / 2, f"{engine}: {between.size} of {filled.size} samples are not saturated"
    share = np.count_nonzero(between % LEVEL_STEP) / between.size
    assert share > 0.98, f"{engine}: only {share:.1%} of the fill's unsaturated samples are not 8-bit levels"
