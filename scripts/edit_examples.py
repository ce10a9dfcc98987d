"""Make the README's Zoom Out and Pan examples with the embedded model, as the bot makes them.

    .venv/bin/python scripts/edit_examples.py [--out-dir docs] [--model DIR]

Tile 1 of `/imagine PROMPT --seed 1`, its U1, then Zoom Out 2x and Pan ⬅️ of that upscale through the bot's
own edit geometry (imaginebot.edits) and engine. Each picture shows the upscale on the left and the grid the
tool posts on the right, three times enlarged so the 64-pixel model's work can be seen.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from grid_example import example_spec  # noqa: E402
from PIL import Image  # noqa: E402

from imaginebot import edits  # noqa: E402
from imaginebot.config import EMBEDDED_MODEL  # noqa: E402
from imaginebot.engine import load_engine  # noqa: E402
from imaginebot.engine.canvas import Direction  # noqa: E402
from imaginebot.engine.grid import make_grid  # noqa: E402
from imaginebot.store_models import Edit, EditKind  # noqa: E402

SCALE = 3


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    left, right = (
        im.resize((im.width * SCALE, im.height * SCALE), Image.Resampling.LANCZOS) for im in (left, right)
    )
    gap = 8 * SCALE
    out = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), "white")
    out.paste(left, (0, (out.height - left.height) // 2))
    out.paste(right, (left.width + gap, (out.height - right.height) // 2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--model", type=Path, default=EMBEDDED_MODEL)
    parser.add_argument("--prompt", default="a large red circle on a blue background, in the center")
    args = parser.parse_args()

    engine = load_engine(args.model, device="cpu", dtype="float32")
    side = engine.native_size
    spec = example_spec(side, args.prompt, (1,))
    tile = engine.generate(spec).images[0]
    upscale = engine.generate(dataclasses.replace(spec, init_image=tile), task="upscale").images[0]
    for name, edit in (
        ("zoom", Edit(EditKind.ZOOM, factor=2.0)),
        ("pan", Edit(EditKind.PAN, direction=Direction.LEFT)),
    ):
        width, height = edits.size(edit, upscale.size, (1, 1), side)
        canvas = edits.make_canvas(edit, upscale, (width, height))
        job = dataclasses.replace(
            spec,
            width=width,
            height=height,
            seeds=(11, 12, 13, 14),
            init_image=canvas.image,
            mask_image=canvas.mask,
        )
        out = args.out_dir / f"{name}-example.png"
        side_by_side(upscale, make_grid(engine.generate(job).images)).save(out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
