"""Test support: a tiny stand-in for MI-GAN's ONNX pipeline, built offline with the ``onnx`` package.

It has the upstream graph's signature (:mod:`daemon.engines.migan`: inputs ``image`` uint8 ``(batch_size, 3, height,
width)`` and ``mask`` uint8 ``(batch_size, 1, height, width)``, 255 = known, output ``result`` uint8 of the image's
shape, opset 17) and a few operators in place of the GAN: every hole pixel (mask 0) becomes the mean colour of the
known pixels, rounded (:func:`expected_fill`); every known pixel is the input's. :func:`cache_tiny_migan` puts it
where huggingface_hub's cache keeps the real file, so the engine's own loading code finds and loads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gimp_inpaint.daemon.engines.migan import FILENAME, INPUTS, OUTPUT, REPO_ID, REVISION

OPSET = 17
"""The opset ``scripts/create_onnx_pipeline.py`` exports with."""

IR_VERSION = 8
"""The ONNX IR version of opset 17 (what torch's exporter of that opset writes), readable by every onnxruntime the
lock allows."""


def tiny_migan_bytes(output: str = OUTPUT) -> bytes:
    """The serialized tiny graph (a few hundred bytes); ``output`` renames its output (a graph that is not
    MI-GAN's, for the engine's signature check).

    Raises:
        onnx.checker.ValidationError: never for this graph (it is checked before it is returned).
    """
    import onnx
    from onnx import TensorProto, helper

    dims: list[str | int] = ["batch_size", 3, "height", "width"]
    inputs = [helper.make_tensor_value_info(name, TensorProto.UINT8, ["batch_size", channels, "height", "width"])
              for name, channels in INPUTS.items()]
    constants = [helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0]),
                 helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
                 helper.make_tensor("spatial", TensorProto.INT64, [2], [2, 3])]
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["mask"], ["mask_255"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["mask_255", "scale"], ["known"]),  # 1 known, 0 hole: exact in float32
        helper.make_node("Mul", ["pixels", "known"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "spatial"], ["sums"], keepdims=1),  # (B, 3, 1, 1)
        helper.make_node("ReduceSum", ["known", "spatial"], ["count"], keepdims=1),  # (B, 1, 1, 1)
        helper.make_node("Max", ["count", "one"], ["divisor"]),  # no known pixel: the fill is black
        helper.make_node("Div", ["sums", "divisor"], ["mean"]),
        helper.make_node("Round", ["mean"], ["fill"]),
        helper.make_node("Sub", ["one", "known"], ["hole"]),
        helper.make_node("Mul", ["fill", "hole"], ["filled"]),  # (B, 3, H, W) by broadcasting
        helper.make_node("Add", ["kept", "filled"], ["composed"]),
        helper.make_node("Cast", ["composed"], [output], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(nodes, "tiny_migan_pipeline", inputs,
                              [helper.make_tensor_value_info(output, TensorProto.UINT8, dims)], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="gimp-inpaint tests")
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def cache_tiny_migan(cache: Path, content: bytes | None = None) -> Path:
    """Put the tiny graph (or ``content``) where huggingface_hub's cache ``cache`` (``HF_HUB_CACHE``) keeps
    :data:`FILENAME` of :data:`REPO_ID` at :data:`REVISION` (``models--OWNER--NAME/snapshots/COMMIT/FILE``, the
    layout ``try_to_load_from_cache`` reads); returns its path."""
    from huggingface_hub.file_download import repo_folder_name

    path = cache / repo_folder_name(repo_id=REPO_ID, repo_type="model") / "snapshots" / REVISION / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiny_migan_bytes() if content is None else content)
    return path


def expected_fill(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The colour the tiny graph paints ``hole`` (H×W bool) of ``image`` (H×W×3 uint8) with: the known pixels' mean,
    rounded half to even (ONNX ``Round``), as 3 uint8; within 1 of the graph's own (float32 sums in another
    order)."""
    return np.round(image[~hole].mean(axis=0)).astype(np.uint8)
