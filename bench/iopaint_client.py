"""IOPaint's one-shot HTTP client (issue 10, bench/speed.py pair 6): one fill by a running IOPaint server, file to file.

    python bench/iopaint_client.py URL IMAGE MASK OUT [--flag INPAINT_TELEA] [--radius 3]

Reads the image and mask files (PNG), posts them to ``URL/api/v1/inpaint`` as IOPaint's own web client does
(IOPaint 1.6.0, ``iopaint/web_app``'s ``fetch(`${api}/inpaint`, …)``: a JSON body whose ``image`` and ``mask`` are the
files' bytes as ``data:image/png;base64,…`` data URLs, ``FileReader.readAsDataURL``; ``hd_strategy = "Crop"`` with a
128-pixel margin), and writes the response body, the result encoded by the server in the image's own format (PNG
for a PNG), to OUT as it comes. The request's other fields (``iopaint/schema.py``'s ``InpaintRequest``) keep their
defaults, which is what the web client's values amount to for the ``cv2`` model (the web client's misspelled
``hd_strategy_crop_triger_size`` and ``hd_trategy_resize_imit`` are not fields, so it gets their defaults too).
``--flag`` and ``--radius`` are the ``cv2`` model's ``cv2_flag`` and ``cv2_radius``: here Telea with radius 3 by
default, gimp-inpaint's OpenCV engine's settings, where IOPaint's own defaults are ``INPAINT_NS`` with radius 4 (the
schema) or 5 (the web client's settings panel).

Standard library only, so that it runs under any Python 3.10+ (the benchmark runs it with gimp-inpaint's; IOPaint's
own virtual environment would do too). Exits non-zero with the server's answer on stderr when the request fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT = 600.0
"""Seconds to wait for the server's answer (reached only when something is broken)."""


def data_url(path: Path) -> str:
    """The file's bytes as a base64 data URL, as the browser's ``FileReader.readAsDataURL`` gives it."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def inpaint(url: str, image: Path, mask: Path, flag: str, radius: int) -> bytes:
    """POST one ``InpaintRequest`` to ``url``'s ``/api/v1/inpaint``; the response body (the encoded result).

    Raises urllib.error.HTTPError when the server answers with an error status, urllib.error.URLError when it cannot
    be reached."""
    body = json.dumps({"image": data_url(image), "mask": data_url(mask), "cv2_flag": flag, "cv2_radius": radius,
                       "hd_strategy": "Crop", "hd_strategy_crop_margin": 128}).encode("ascii")
    request = urllib.request.Request(f"{url.rstrip('/')}/api/v1/inpaint", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return bytes(response.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the IOPaint server, e.g. http://127.0.0.1:8080")
    parser.add_argument("image", type=Path)
    parser.add_argument("mask", type=Path, help="where to fill: above 127 (IOPaint thresholds the mask at 127)")
    parser.add_argument("out", type=Path, help="where to write the result (the server's encoding, PNG for a PNG)")
    parser.add_argument("--flag", default="INPAINT_TELEA", choices=["INPAINT_TELEA", "INPAINT_NS"],
                        help="the cv2 model's cv2_flag (default: INPAINT_TELEA, as gimp-inpaint's OpenCV engine)")
    parser.add_argument("--radius", type=int, default=3,
                        help="the cv2 model's cv2_radius (default: 3, as gimp-inpaint's OpenCV engine)")
    args = parser.parse_args()
    try:
        result = inpaint(args.url, args.image, args.mask, args.flag, args.radius)
    except urllib.error.HTTPError as error:
        print(f"IOPaint answered {error.code}: {error.read()[:2000].decode('utf-8', 'replace')}", file=sys.stderr)
        return 1
    args.out.write_bytes(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
