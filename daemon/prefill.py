"""The hole's pre-fills of the fill modes and the colour match: what the worker does to an engine's input and output.

Pure NumPy/OpenCV functions; no torch, no I/O. Conventions as in :mod:`daemon.compositing`: images are H×W×3
``uint8`` or ``uint16`` RGB (H×W×4 RGBA for the request's own pixels; ``uint16`` for a 16-bit crop, issue 12), a
hole or mask is H×W ``uint8`` with 255 (any non-zero value) = hole and 0 = known pixel, at either depth.

The pre-fills follow Krita AI Diffusion (``fill_masked`` in ``ai_diffusion/workflow.py``), whose inpaint modes
prepare the hole with the nodes of comfyui-inpaint-nodes (``nodes.py``): its *fill* mode blurs the image into
the hole (``INPAINT_MaskedBlur``, a Gaussian of kernel size 65; here a blur of the surroundings alone,
:func:`fill`), its *expand* mode fills the hole from its border by Navier–Stokes (``INPAINT_MaskedFill``
``"navier-stokes"``: ``cv2.inpaint`` with ``cv2.INPAINT_NS``, radius 3) and then blurs it the same way
(:func:`expand`). The remove mode's pre-fill is the daemon's removal engine's output (:mod:`daemon.worker`). Only
the hole changes: every other pixel of a pre-fill is its input's, bit for bit.

The colour match is Reinhard et al.'s colour transfer ("Color Transfer between Images", IEEE Computer Graphics and
Applications 21(5), 2001): each channel's mean and standard deviation moved to a reference's, here in CIELAB
(issue 11) and with a ring of the original around the hole as the reference.
"""

from __future__ import annotations

import cv2
import numpy as np

from .compositing import LEVEL_STEP, SAMPLE_DTYPES, mask_box, to_8_bits, to_16_bits

BLUR_KERNEL = 65
"""Side (pixels) of the Gaussian kernel the expand pre-fill blurs the hole with: Krita AI Diffusion's
``blur_masked(image, mask, 65)`` for its border fill (``fill_masked``, ``ai_diffusion/workflow.py``; its blur fill
uses the same kernel)."""

BLUR_SIGMA = 0.3 * (BLUR_KERNEL - 1) + 0.8
"""Standard deviation (pixels) of that Gaussian, 20.0: comfyui-inpaint-nodes' ``gaussian_blur`` (``util.py``) takes
``0.3 × (kernel − 1) + 0.8`` when no sigma is given, as ``INPAINT_MaskedBlur`` calls it."""

NS_RADIUS = 3
"""``inpaintRadius`` (pixels) of the expand mode's ``cv2.inpaint`` (``cv2.INPAINT_NS``): comfyui-inpaint-nodes'
``INPAINT_MaskedFill`` uses 3, as OpenCV's inpainting sample does."""

NEUTRAL_GREY = 128
"""The value (each of R, G, B) a pre-fill puts in a hole that has no known pixel to spread: Krita AI Diffusion's
"neutral" fill is 0.5 (comfyui-inpaint-nodes ``INPAINT_MaskedFill`` ``"neutral"``), 127.5 rounded up."""

RING_WIDTH = 16
"""Width (pixels) of the ring of original pixels, just outside the blend mask, whose CIELAB statistics the
generated area is given (:func:`match_colors`): some thousands of pixels around any hole of a few dozen pixels,
enough for a stable mean and spread, and near enough to be the hole's surroundings; the context crop's default
padding (64 px beyond the blend mask) holds it."""

STD_FLOOR = 0.5
"""A channel of the generated area whose standard deviation (CIELAB units) is below this is flat: only its mean is
moved (scaling its spread would only amplify rounding noise, and divide by zero for a single colour)."""

SCALE_LIMIT = 4.0
"""The colour match scales a channel's spread by at most this factor, and by at least its inverse: spreads more than
4× apart are different textures (a flat sky filled into foliage), which scaling would turn into amplified noise or
a flat smear; such a channel's spread moves only as far as this allows."""


def _check_image(image: np.ndarray, hole: np.ndarray) -> None:
    """Raises ValueError unless ``image`` is H×W×3 uint8 or uint16 and ``hole`` H×W uint8 of the same H×W."""
    if (image.ndim != 3 or image.shape[2] != 3 or image.dtype not in SAMPLE_DTYPES or hole.shape != image.shape[:2]
            or hole.dtype != np.uint8):
        raise ValueError(f"a pre-fill needs an H×W×3 uint8 or uint16 image and an H×W uint8 hole, got {image.shape} "
                         f"{image.dtype}, {hole.shape} {hole.dtype}")


def _rounded(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float32 samples ≥ 0 on ``dtype``'s scale (0…255 or 0…65535) rounded to the nearest and saturated into it:
    ``cv2.convertScaleAbs`` for ``uint8`` (which takes ``|x|`` first), NumPy's ``rint`` and ``minimum`` for
    ``uint16``. A new array."""
    if dtype == np.uint8:
        return cv2.convertScaleAbs(values)
    return np.minimum(np.rint(values), 65535).astype(np.uint16)


def _blur_hole(filled: np.ndarray, hole: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``image`` with its hole replaced by ``cv2.GaussianBlur(filled)`` (:data:`BLUR_KERNEL`, :data:`BLUR_SIGMA`):
    comfyui-inpaint-nodes' ``INPAINT_MaskedBlur`` without falloff (the blur of the whole image, taken where the mask
    is).

    Only the hole's bounding box widened by half the kernel is blurred: every hole pixel's kernel lies inside that
    region, or meets the crop's border where the whole image's blur meets it too (OpenCV's default border,
    reflect-101, is kornia's ``reflect``, which the node uses), so the hole's pixels are the whole image's blur's
    (``tests/test_prefill.py`` compares them).

    Args:
        filled: H×W×3 uint8 or uint16, ``image`` with its hole filled by some method.
        hole: H×W uint8, non-zero = hole (some pixel non-zero).
        image: H×W×3, ``filled``'s type, the pixels outside the hole.

    Returns:
        H×W×3 of ``image``'s type, new.
    """
    rows, columns = mask_box(hole)
    reach = BLUR_KERNEL // 2
    region = (slice(max(rows.start - reach, 0), rows.stop + reach),
              slice(max(columns.start - reach, 0), columns.stop + reach))
    blurred = cv2.GaussianBlur(filled[region], (BLUR_KERNEL, BLUR_KERNEL), BLUR_SIGMA)
    result = image.copy()
    np.copyto(result[region], blurred, where=hole[region][..., None] > 0)
    return result


def _neutral(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``image`` with its hole set to :data:`NEUTRAL_GREY` (``257 ×`` it at 16 bits; a new array of ``image``'s
    type)."""
    result = image.copy()
    result[hole > 0] = NEUTRAL_GREY if image.dtype == np.uint8 else NEUTRAL_GREY * LEVEL_STEP
    return result


def _without_known_edge(image: np.ndarray, hole: np.ndarray) -> np.ndarray | None:
    """The pre-fill of a hole that has nothing to continue, after the inputs' check (:func:`_check_image`): a copy of
    ``image`` for an empty hole, :func:`_neutral` for a hole over the whole crop; None otherwise.

    Raises:
        ValueError: as :func:`_check_image`.
    """
    _check_image(image, hole)
    holes = cv2.countNonZero(hole)
    if not holes:
        return image.copy()
    return _neutral(image, hole) if holes == hole.size else None


def _pull_push(colours: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Every pixel's value interpolated from the known ones by pull-push (Gortler et al., "The Lumigraph", SIGGRAPH
    1996, section 3.3): the pull builds a pyramid of weight-premultiplied colours and weights with ``cv2.pyrDown``
    (5×5 Gaussian, then every other pixel) until a level has no pixel of weight 0; the push goes back down with
    ``cv2.pyrUp``, each level's value the mix ``c + (1 − w) × up`` of its own average colour (premultiplied ``c`` of
    weight ``w`` ∈ [0, 1]) and the coarser level's. A known pixel (weight 1) keeps its value; a hole's pixels are
    convex combinations of known ones, smooth, reaching as far as the hole is wide.

    Args:
        colours: H×W×3 float32.
        known: H×W float32, 1 = known, 0 = hole; some pixel 1.

    Returns:
        H×W×3 float32.
    """
    levels = [(colours * known[..., None], known)]
    while levels[-1][1].min() <= 0 and max(levels[-1][1].shape) > 1:
        premultiplied, weight = levels[-1]
        levels.append((cv2.pyrDown(premultiplied), cv2.pyrDown(weight)))
    premultiplied, weight = levels.pop()
    filled = premultiplied / np.maximum(weight, np.finfo(np.float32).tiny)[..., None]
    for premultiplied, weight in reversed(levels):
        up = cv2.pyrUp(filled, dstsize=(weight.shape[1], weight.shape[0]))
        up *= (1 - weight)[..., None]
        filled = premultiplied + up
    return filled


def fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The fill mode's pre-fill: the hole holds a blur of its surroundings.

    The known pixels are spread into the hole by pull-push (:func:`_pull_push`): each hole pixel is a Gaussian-
    weighted mix of the known pixels around it, over as wide a reach as the hole needs, so a hole of any size is
    covered smoothly and its edge meets the pixels next to it. Krita AI Diffusion's fill mode blurs the whole image
    into the hole instead (``blur_masked(image, mask, 65, falloff=9)``), the hole's own pixels included; here they
    are not read: issue 11 asks for a blur of the surroundings, and a selection to fill usually holds what is to be
    replaced. (A further blur of kernel :data:`BLUR_KERNEL` would only lose that edge: measured on the
    scikit-image photos, it doubles the step between the hole's edge and its neighbours.) A hole without any known
    pixel becomes :data:`NEUTRAL_GREY`.

    Args:
        image: H×W×3 uint8 or uint16 RGB (read-only will do).
        hole: H×W uint8, non-zero = hole.

    Returns:
        H×W×3 RGB of ``image``'s type, new: ``image`` exactly outside the hole; inside it, values within the known
        pixels' range (convex combinations of them, rounded).

    Raises:
        ValueError: the shapes or dtypes are not those.
    """
    trivial = _without_known_edge(image, hole)
    if trivial is not None:
        return trivial
    known = cv2.threshold(hole, 0, 1, cv2.THRESH_BINARY_INV)[1].astype(np.float32)
    filled = _rounded(_pull_push(image.astype(np.float32), known), image.dtype)  # the values are ≥ 0
    result = image.copy()
    cv2.copyTo(filled, hole, result)  # into ``result`` itself
    return result


def expand(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The expand mode's pre-fill: the hole continues the colours of its border, softened.

    Krita AI Diffusion's expand (border) fill: ``cv2.inpaint`` with ``cv2.INPAINT_NS`` (Bertalmio, Bertozzi and
    Sapiro, "Navier-Stokes, Fluid Dynamics, and Image and Video Inpainting", CVPR 2001; radius :data:`NS_RADIUS`)
    propagates the border's colours and lines into the hole, then the hole is blurred (:data:`BLUR_KERNEL`,
    :data:`BLUR_SIGMA`), so the engine gets the border's colours without its streaks. A hole without any known pixel
    becomes :data:`NEUTRAL_GREY`.

    At 16 bits the Navier–Stokes pass runs on the image reduced to 8 bits (:func:`daemon.compositing.to_8_bits`:
    OpenCV inpaints colour images of 8 bits only), its hole scaled back (:func:`daemon.compositing.to_16_bits`)
    into the 16-bit image, and the blur, at 16 bits, smooths away its 8-bit steps along with the streaks.

    Args:
        image: H×W×3 uint8 or uint16 RGB (read-only will do).
        hole: H×W uint8, non-zero = hole.

    Returns:
        H×W×3 RGB of ``image``'s type, new: ``image`` exactly outside the hole.

    Raises:
        ValueError: the shapes or dtypes are not those.
    """
    trivial = _without_known_edge(image, hole)
    if trivial is not None:
        return trivial
    if image.dtype == np.uint8:
        return _blur_hole(cv2.inpaint(np.ascontiguousarray(image), hole, NS_RADIUS, cv2.INPAINT_NS), hole, image)
    continued = image.copy()
    cv2.copyTo(to_16_bits(cv2.inpaint(to_8_bits(image), hole, NS_RADIUS, cv2.INPAINT_NS)), hole, continued)
    return _blur_hole(continued, hole, image)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of H×W×3 uint8 or uint16 sRGB (a strided view will do) as a new H×W×3 float32 array:
    ``cv2.COLOR_RGB2Lab`` on float32 in 0…1 (L* 0…100, a* and b* about −128…127), converted in place, so one float
    array is made (``tests/test_prefill.py`` checks that OpenCV's in-place conversion equals its out-of-place
    one)."""
    lab = np.multiply(rgb, np.float32(1 / (255 if rgb.dtype == np.uint8 else 65535)), dtype=np.float32)
    return cv2.cvtColor(lab, cv2.COLOR_RGB2Lab, dst=lab)


def match_colors(generated: np.ndarray, original: np.ndarray, blend: np.ndarray) -> np.ndarray:
    """``generated`` with the CIELAB mean and standard deviation of its pixels inside the blend mask moved to those
    of a ring of original pixels around it (Reinhard et al. 2001, in CIELAB), so no colour cast or contrast change
    of the engine shows against the surroundings.

    The ring is the original's pixels within :data:`RING_WIDTH` pixels outside the blend mask (Euclidean distance,
    ``cv2.distanceTransform`` with its 5×5 mask: 7 ms where dilating by a disc took 26, at 2048²) and not fully
    transparent (alpha 0 shows nothing, so its colour says nothing). For each channel ``L*``, ``a*``, ``b*``
    (``cv2.cvtColor`` on float32, statistics by ``cv2.meanStdDev``, population standard deviation), inside the
    blend mask ``x ↦ (x − mean) × ring_std / std + ring_mean`` (one ``cv2.transform``), the factor kept within
    1/:data:`SCALE_LIMIT` … :data:`SCALE_LIMIT` and 1 for a flat channel (std < :data:`STD_FLOOR`); back to sRGB,
    clipped to 0…255 (0…65535 at 16 bits), rounded and copied into the blend mask (``cv2.copyTo``). Only the ring's
    bounding box is converted, in one float32 array (12 bytes a pixel) that every step works in.

    Args:
        generated: H×W×3 uint8 or uint16 RGB, the engine's output at the crop's size.
        original: H×W×4 RGBA of ``generated``'s type, the request's crop (straight alpha; read-only will do).
        blend: H×W uint8 blend mask (:func:`daemon.compositing.blend_mask`), > 0 = generated area.

    Returns:
        H×W×3 RGB of ``generated``'s type, new: ``generated`` where ``blend`` is 0 (and everywhere when the ring is
        empty: a blend mask covering the crop, or only transparent pixels around it), the matched colours where it
        is > 0.

    Raises:
        ValueError: shapes or dtypes disagree, or ``blend`` is all zero.
    """
    height, width = blend.shape[:2]
    if (generated.shape != (height, width, 3) or original.shape != (height, width, 4) or blend.ndim != 2
            or generated.dtype != original.dtype or generated.dtype not in SAMPLE_DTYPES or blend.dtype != np.uint8):
        raise ValueError(f"match_colors needs H×W×3 and H×W×4 arrays of one type (uint8 or uint16) and an H×W "
                         f"uint8 mask, got {generated.shape} {generated.dtype}, {original.shape} {original.dtype}, "
                         f"{blend.shape} {blend.dtype}")
    rows, columns = mask_box(blend)
    box = (slice(max(rows.start - RING_WIDTH, 0), rows.stop + RING_WIDTH),
           slice(max(columns.start - RING_WIDTH, 0), columns.stop + RING_WIDTH))
    inside = cv2.threshold(blend[box], 0, 255, cv2.THRESH_BINARY)[1]
    distance = cv2.distanceTransform(cv2.bitwise_not(inside), cv2.DIST_L2, cv2.DIST_MASK_5)  # 0 inside
    ring = cv2.inRange(distance, 1, RING_WIDTH)
    alpha = original[box][..., 3]
    visible = cv2.threshold(alpha, 0, 255, cv2.THRESH_BINARY)[1] if alpha.dtype == np.uint8 else \
        cv2.inRange(alpha, 1, 65535)  # the threshold of a uint16 array is uint16
    cv2.bitwise_and(ring, visible, dst=ring)
    result = generated.copy()
    if not cv2.countNonZero(ring):
        return result
    ring_pixels = np.ascontiguousarray(original[box][..., :3][ring > 0])[:, None, :]  # N×1×3: the ring alone
    ring_mean, ring_std = (values.ravel() for values in cv2.meanStdDev(_lab(ring_pixels)))
    lab = _lab(generated[box])
    mean, std = (values.ravel() for values in cv2.meanStdDev(lab, mask=inside))
    scale = np.where(std < STD_FLOOR, 1.0, np.clip(ring_std / np.maximum(std, STD_FLOOR), 1 / SCALE_LIMIT,
                                                    SCALE_LIMIT))
    affine = np.hstack([np.diag(scale), (ring_mean - mean * scale)[:, None]]).astype(np.float32)
    cv2.transform(lab, affine, dst=lab)  # x ↦ (x − mean) × scale + ring_mean, per channel, in one pass
    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB, dst=lab)  # in place, as in _lab
    np.maximum(rgb, 0, out=rgb)  # then scaled, rounded and saturated (convertScaleAbs takes |x| first)
    if generated.dtype == np.uint8:
        matched = cv2.convertScaleAbs(rgb, alpha=255)
    else:
        matched = _rounded(np.multiply(rgb, np.float32(65535), out=rgb), generated.dtype)
    cv2.copyTo(matched, inside, result[box])  # into the view, inside the mask only
    return result
