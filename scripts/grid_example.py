"""Make the example grid of the README and MODEL.md: four tiles from the embedded model, as the bot lays them.

    .venv/bin/python scripts/grid_example.py [--out docs/grid-example.png] [--model DIR] [--prompt "..."]

Uses the bot's own engine and grid code with the embedded model's defaults (20 steps, guidance 5, euler_a),
seeds 1-4, so the picture is exactly what `/imagine PROMPT --seed 1` posts, before Discord's scaling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imaginebot.config import EMBEDDED_DEFAULTS, EMBEDDED_MODEL  # noqa: E402
from imaginebot.engine import GenerateSpec, load_engine  # noqa: E402
from imaginebot.engine.grid import make_grid  # noqa: E402


def example_spec(side: int, prompt: str, seeds: tuple[int, ...]) -> GenerateSpec:
    """``/imagine PROMPT`` with the embedded model's defaults, at its native size."""
    return GenerateSpec(
        prompt=prompt,
        negative_prompt="",
        width=side,
        height=side,
        num_inference_steps=EMBEDDED_DEFAULTS["steps"],
        guidance_scale=EMBEDDED_DEFAULTS["cfg"],
        sampler=EMBEDDED_DEFAULTS["sampler"],
        seeds=seeds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "grid-example.png")
    parser.add_argument("--model", type=Path, default=EMBEDDED_MODEL)
    parser.add_argument("--prompt", default="a large red circle on a blue background, in the center")
    args = parser.parse_args()

    engine = load_engine(args.model, device="cpu", dtype="float32")
    spec = example_spec(engine.native_size, args.prompt, (1, 2, 3, 4))
    make_grid(engine.generate(spec).images).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
