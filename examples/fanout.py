"""Group fan-out: render one image at four widths in parallel, then publish them together.

``thumbnails`` is a chain whose middle step is a group: ``fetch`` runs first,
its result goes to each of the four ``resize`` jobs (which run in parallel, on
whichever workers are free), and ``publish`` gets their four results as one
list, in order::

    jobchain run --config examples/fanout.py --target thumbnails --workers 8 --iterations 50
    jobchain run --config examples/fanout.py --target variants --workers 4 --iterations 20

``variants`` is a group on its own: three resizes of a fixed image.
"""

from __future__ import annotations

import random
import time
from typing import Any

from jobchain import App, chain, group

app = App()


@app.task
def fetch(image_id: str = "") -> dict[str, Any]:
    """Look up an image (made up here)."""
    time.sleep(0.005)
    return {"id": image_id or f"img-{random.randrange(10_000):04d}", "width": 4000, "height": 3000}


@app.task
def resize(image: dict[str, Any], width: int) -> dict[str, Any]:
    """Resize to ``width``, keeping the aspect ratio; bigger takes longer."""
    time.sleep(0.005 + width / 100_000)
    height = round(image["height"] * width / image["width"])
    return {"id": image["id"], "width": width, "height": height, "bytes": width * height // 10}


@app.task
def publish(variants: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish every variant at once; fails nothing, returns a summary."""
    return {
        "id": variants[0]["id"],
        "widths": [v["width"] for v in variants],
        "bytes": sum(v["bytes"] for v in variants),
    }


thumbnails = chain(
    fetch,
    group(resize.s(width=160), resize.s(width=320), resize.s(width=640), resize.s(width=1280)),
    publish,
    name="thumbnails",
)

LOGO = {"id": "logo", "width": 800, "height": 600}
variants = group(resize.s(LOGO, width=64), resize.s(LOGO, width=128), resize.s(LOGO, width=256))
