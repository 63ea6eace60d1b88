"""client.metadata: a result's request record, its JSON round trip, the readable refusals of bad JSON, the recorded
selection and More Like This's seeds."""

from __future__ import annotations

import base64
import dataclasses
import json
import zlib
from typing import Any

import numpy as np
import pytest
from gimp_inpaint.client.fill import FillError, run_fill
from gimp_inpaint.client.metadata import (
    FORMAT_VERSION,
    MetadataError,
    RecordedSelection,
    RequestMetadata,
    next_seed,
)
from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    PROTOCOL_VERSION,
    SEED_MAX,
    EditorOptions,
    FillMode,
    FillOptions,
    Rect,
    Scheduler,
    context_crop,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data, draw, filters
from test_fill import FakeClient, FakeDocument
from test_options import fill_options

CANVAS = (512, 512)
BOUNDS = Rect(180, 200, 150, 110)
"""A selection on :data:`CANVAS` (the astronaut photo's size) around the patch on the suit."""


def feathered_ellipse(bounds: Rect = BOUNDS) -> bytes:
    """A selection's coverage inside ``bounds``: an ellipse filling them, its edge blurred as GIMP's Feather does."""
    mask = np.zeros((bounds.height, bounds.width), np.float64)
    rows, cols = draw.ellipse(bounds.height / 2, bounds.width / 2, bounds.height / 2 - 6, bounds.width / 2 - 6,
                              shape=mask.shape)
    mask[rows, cols] = 1.0
    return np.rint(filters.gaussian(mask, sigma=3) * 255).astype(np.uint8).tobytes()


def record(options: FillOptions | None = None, **changes: Any) -> RequestMetadata:
    """A variant's record as run_fill makes it: the crop is the one the fill would send for the selection."""
    options = options if options is not None else FillOptions(
        prompt="a red boat on the lake — «café» 🚣", engine="", scheduler=Scheduler.EULER_A,
        loras={"detail": 0.8, "style": -1.25}, num_inference_steps=30, seed=-1, num_variants=3, feather=6)
    editor = EditorOptions(padding=40, sample_merged=False)
    crop = context_crop(BOUNDS, *CANVAS, editor.padding + options.grow + 2 * options.feather)
    fields: dict[str, Any] = {
        "options": options, "editor": editor, "engine": "sd15-inpaint", "fill_mode": FillMode.FILL, "seed": 1234567,
        "crop": crop, "selection": RecordedSelection(*CANVAS, BOUNDS, feathered_ellipse()), "job": "a" * 32,
        "origin": "b" * 32, "client": "gimp-inpaint-plugin/0.1", "daemon_version": "0.1.0", **changes}
    return RequestMetadata(**fields)


def written(**changes: Any) -> dict[str, Any]:
    """:func:`record`'s JSON object with ``changes`` to its fields (None removes one)."""
    obj = json.loads(record().to_json())
    obj.update(changes)
    return {name: value for name, value in obj.items() if value is not None}


def test_round_trip_keeps_every_field() -> None:
    made = record()
    text = made.to_json()
    back = RequestMetadata.from_json(text)
    assert back == made and back.notes == ()
    assert RequestMetadata.from_json(text.encode("utf-8")) == made  # a parasite's bytes
    obj = json.loads(text)
    assert obj["format"] == FORMAT_VERSION and obj["protocol_version"] == PROTOCOL_VERSION
    assert set(obj["options"]) == set(FILL_OPTIONS) and set(obj["editor"]) == set(EDITOR_OPTIONS)
    assert obj["options"]["scheduler"] == "euler_a" and obj["options"]["loras"] == {"detail": 0.8, "style": -1.25}
    assert obj["selection"] == [180, 200, 150, 110] and obj["canvas"] == [512, 512]
    assert "🚣" in text  # written as UTF-8, not escaped


def test_the_mask_is_stored_compressed() -> None:
    text = record().to_json()
    mask = feathered_ellipse()
    assert len(json.loads(text)["mask"]) < len(mask) / 4  # 16 500 bytes of coverage in under 4 kB of base64
    assert zlib.decompress(base64.b64decode(json.loads(text)["mask"])) == mask


def test_the_request_and_regenerate_options() -> None:
    made = record()
    assert made.request_options() == dataclasses.replace(made.options, engine="sd15-inpaint",
                                                         fill_mode=FillMode.FILL)
    again = made.regenerate_options()
    assert again.engine == "sd15-inpaint" and again.seed == 1234567 and again.num_variants == 1  # this one again
    assert again.fill_mode is FillMode.AUTO  # as asked: auto decides again for a changed prompt
    more = made.regenerate_options(seed=99, num_variants=2)
    assert (more.seed, more.num_variants, more.prompt) == (99, 2, made.options.prompt)


@settings(max_examples=60, deadline=None)
@given(options=fill_options(), seed=st.integers(0, SEED_MAX), mode=st.sampled_from([FillMode.FILL, FillMode.REMOVE,
                                                                                    FillMode.EXPAND]))
def test_any_options_round_trip(options: FillOptions, seed: int, mode: FillMode) -> None:
    made = record(options, seed=seed, fill_mode=mode)
    assert RequestMetadata.from_json(made.to_json()) == made


def test_the_recorded_selection_is_cut_from_the_crop_and_read_anywhere() -> None:
    photo = data.astronaut()
    coverage = np.zeros(photo.shape[:2], np.uint8)
    coverage[BOUNDS.y:BOUNDS.bottom, BOUNDS.x:BOUNDS.right] = np.frombuffer(
        feathered_ellipse(), np.uint8).reshape(BOUNDS.height, BOUNDS.width)
    crop = context_crop(BOUNDS, *CANVAS, 64)
    crop_mask = coverage[crop.y:crop.bottom, crop.x:crop.right].tobytes()
    recorded = RecordedSelection.from_crop(*CANVAS, BOUNDS, crop, crop_mask)
    assert recorded.mask == feathered_ellipse()
    assert recorded.read(crop) == crop_mask
    corner = Rect(0, 0, 200, 220)  # partly over the bounds
    assert recorded.read(corner) == coverage[:220, :200].tobytes()
    assert recorded.read(Rect(400, 400, 50, 50)) == bytes(2500)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "is not JSON"),
    ("[1, 2]", "is a JSON list, not an object"),
    ("{}", "has no format version"),
    (json.dumps({**{"format": 2}}), "of format 2, written by a newer gimp-inpaint; this one reads format 1: update"),
    (json.dumps({"format": 0}), "of format 0, which no gimp-inpaint wrote"),
    (b"\xff\xfe{", "is not JSON"),
])
def test_what_is_not_a_record_is_refused_readably(text: str | bytes, message: str) -> None:
    with pytest.raises(MetadataError, match=message.replace("(", r"\(")):
        RequestMetadata.from_json(text)


@pytest.mark.parametrize(("changes", "message"), [
    ({"seed": None}, "lacks the field 'seed'"),
    ({"seed": None, "crop": None}, "lacks the fields 'seed', 'crop'"),
    ({"seed": "12"}, "field 'seed' must be an integer, got str"),
    ({"seed": True}, "field 'seed' must be an integer, got bool"),
    ({"seed": SEED_MAX + 1}, f"the seed {SEED_MAX + 1} is outside"),
    ({"fill_mode": "auto"}, "cannot be auto"),
    ({"fill_mode": "paint"}, "fill mode 'paint' is not one of auto, fill, remove, expand"),
    ({"crop": [0, 0, 10]}, "field 'crop' must be 4 integers"),
    ({"crop": [0, 0, 100, 100]}, "does not contain the selection"),
    ({"selection": [500, 500, 150, 110]}, "outside the 512×512 canvas"),
    ({"mask": "not base64!"}, "mask cannot be read"),
    ({"mask": base64.b64encode(b"not zlib").decode()}, "mask cannot be read"),
    ({"mask": base64.b64encode(zlib.compress(bytes(10))).decode()}, "has 10 bytes, not 150×110"),
    ({"engine": ""}, "'engine' is empty"),
    ({"options": []}, "field 'options' must be an object"),
])
def test_a_bad_field_is_refused_readably(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        RequestMetadata.from_json(json.dumps(written(**changes)))


def test_an_option_out_of_range_is_refused_with_the_tables_message() -> None:
    obj = written()
    obj["options"]["num_variants"] = 99
    with pytest.raises(MetadataError, match=r"option num_variants=99 is outside \[1, 16\]"):
        RequestMetadata.from_json(json.dumps(obj))
    obj["options"]["num_variants"], obj["options"]["scheduler"] = 3, "heun"
    with pytest.raises(MetadataError, match="option scheduler 'heun' is not one of default, ddim"):
        RequestMetadata.from_json(json.dumps(obj))
    obj["options"]["scheduler"], obj["editor"]["padding"] = "euler_a", -1
    with pytest.raises(MetadataError, match=r"editor option padding=-1 is outside \[0, 1024\]"):
        RequestMetadata.from_json(json.dumps(obj))


def test_unknown_names_are_ignored_and_missing_options_default_with_notes() -> None:
    """What a later version of the same format may write reads with notes: its new option and field are ignored, an
    option it dropped takes its default."""
    obj = written(written_by_gimp="3.2.6")
    obj["options"]["sharpness"] = 0.5
    del obj["options"]["eta"], obj["editor"]["sample_merged"]
    back = RequestMetadata.from_json(json.dumps(obj))
    assert back == dataclasses.replace(record(), editor=EditorOptions(padding=40))
    assert back.options.eta == FILL_OPTIONS["eta"].default
    assert sorted(back.notes) == sorted([
        "the field 'written_by_gimp' is unknown to this gimp-inpaint and was ignored",
        "the option 'sharpness' is unknown to this gimp-inpaint and was ignored",
        "the option 'eta' was not recorded and takes its default",
        "the editor option 'sample_merged' was not recorded and takes its default"])


def test_next_seed_skips_the_lineages_seeds_and_wraps() -> None:
    used = {100, 101, 102}  # a fill of 3 variants from seed 100
    assert next_seed(102, used, 2) == 103  # More Like This on the last variant
    assert next_seed(101, used, 2) == 103  # … on the middle one: 102 is taken
    assert next_seed(101, used | {103, 104}, 2) == 105  # the second time: past the first More Like This
    assert next_seed(98, used, 2) == 98 and next_seed(99, used, 2) == 103  # 99, 100 would clash
    assert next_seed(SEED_MAX, {0, 1}, 2) == 2  # SEED_MAX, 0 clashes; the daemon wraps to 0 as well
    assert next_seed(SEED_MAX + 1, set(), 1) == 0
    with pytest.raises(ValueError):
        next_seed(0, set(), 0)


def ellipse_document() -> FakeDocument:
    """The fake document of tests/test_fill.py with a feathered elliptic selection in :data:`ELLIPSE`."""
    document = FakeDocument()
    document.selection[ELLIPSE.y:ELLIPSE.bottom, ELLIPSE.x:ELLIPSE.right] = np.frombuffer(
        feathered_ellipse(ELLIPSE), np.uint8).reshape(ELLIPSE.height, ELLIPSE.width)
    return document


ELLIPSE = Rect(140, 90, 80, 60)
"""The selection's box on the fake document's 400×300 canvas."""


def test_each_result_layer_carries_its_request() -> None:
    document, client = ellipse_document(), FakeClient()
    options, editor = FillOptions(seed=7, num_variants=2, feather=4), EditorOptions(padding=32)
    run_fill(document, lambda: client, options, editor)
    (request,) = client.requests
    first, second = (layer.metadata for layer in document.layers)
    assert first is not None and second is not None
    assert (first.seed, second.seed) == (7, 8) == (document.layers[0].seed, document.layers[1].seed)
    assert first.options == options and first.editor == editor  # as asked: no engine, auto
    assert (first.engine, first.fill_mode) == ("sd15-inpaint", FillMode.REMOVE)  # the first engine; no prompt
    assert first.request_options() == request.options  # the record the daemon got
    assert first.crop == Rect(request.x, request.y, request.image.width, request.image.height)
    assert first.selection.bounds == document.selection_bounds() == ELLIPSE
    assert first.selection.read(first.crop) == request.mask.data
    assert first.job == first.origin == request.job_id == second.job
    assert (first.client, first.daemon_version, first.protocol_version) == ("fake-client/1", "t", 1)
    assert RequestMetadata.from_json(first.to_json()) == first


def test_a_recorded_selection_is_filled_again_without_the_documents() -> None:
    """More Like This: the recorded selection, the lineage kept, new seeds; the request is the first one's but for
    them."""
    document, client = ellipse_document(), FakeClient()
    run_fill(document, lambda: client, FillOptions(seed=7, feather=4), EditorOptions(padding=32))
    source = document.layers[0].metadata
    assert source is not None
    document.selection[:] = 0  # the user dropped the selection
    run_fill(document, lambda: client, source.regenerate_options(seed=8, num_variants=2), source.editor,
             selection=source.selection, origin=source.origin)
    first, again = client.requests
    assert (again.x, again.y, again.image.width, again.image.height) == (first.x, first.y, first.image.width,
                                                                        first.image.height)
    assert again.mask == first.mask and again.image == first.image
    assert again.options == dataclasses.replace(first.options, seed=8, num_variants=2)
    made = [layer.metadata for layer in document.layers]
    assert [m.seed for m in made if m] == [8, 9] and all(m and m.origin == source.origin != m.job for m in made)


def test_a_recorded_selection_of_another_canvas_is_refused() -> None:
    document, client = ellipse_document(), FakeClient()
    run_fill(document, lambda: client, FillOptions(), EditorOptions())
    source = document.layers[0].metadata
    assert source is not None
    smaller = FakeDocument(width=300, height=200)
    with pytest.raises(FillError, match=r"The image is 300×200 pixels, but the result was made on a canvas of "
                                        r"400×300: select the area to fill again\."):
        run_fill(smaller, lambda: client, FillOptions(), EditorOptions(), selection=source.selection)
    assert len(client.requests) == 1
