"""The loop on a real GPU in half precision: multi-prompts (composable diffusion), --chaos and --stop among
other jobs in shared UNet calls, on SD and SDXL. Skipped without CUDA; run where a GPU is lent (README)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pixels import Tolerance, assert_close_pixels, assert_different_pictures
from test_batching import Job, run_together

from imaginebot.engine import GenerateSpec
from imaginebot.engine.tiny import TinyComponents, engine_from

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

# fp16 rounds each UNet output to 11 bits, and a batch of other rows takes other kernels: a job's pixels in
# a batch drift further from the job alone than in fp32 (BATCHED's 2/255), but a wrong part or weight
# would be tens off everywhere.
FP16_BATCHED = Tolerance(12, 1.0, "fp16 on a GPU: other batch shapes take other kernels, in 11-bit floats")


def spec(prompt: str, **kwargs: object) -> GenerateSpec:
    base: dict[str, object] = {
        "width": 32,
        "height": 32,
        "num_inference_steps": 8,
        "seeds": (1, 2),
        "guidance_scale": 6.0,
    }
    return GenerateSpec(prompt, **(base | kwargs))  # type: ignore[arg-type]


MULTI = spec(
    "a red lighthouse::1 in the clouds::2 fog::-0.5",
    parts=(("a red lighthouse", 1 / 3), ("in the clouds", 2 / 3), ("fog", -1 / 6)),
    chaos=40,
)


@pytest.mark.parametrize("model", ["sd", "sdxl"])
def test_multi_prompts_chaos_and_stop_share_calls_in_half_precision(
    model: str, request: pytest.FixtureRequest
) -> None:
    components: TinyComponents = request.getfixturevalue(model)
    engine = engine_from(components, device="cuda", dtype="float16")
    assert engine.device.type == "cuda" and engine.dtype == torch.float16
    jobs = [
        Job(MULTI),
        Job(spec("a blue boat", seeds=(3,))),
        Job(spec("a green hill", stop=50), joins_at=2),
        Job(spec("a tall tower", parts=(("a tall tower", 1.0), ("night", 0.5))), joins_at=1),
    ]
    alone = [engine.generate(job.spec).images for job in jobs]
    together, widest = run_together(engine, jobs)
    assert widest >= 3  # multi-prompt rows and plain ones in one call
    for job, a, t in zip(jobs, alone, together, strict=True):
        assert all(np.isfinite(np.asarray(image, dtype=np.float32)).all() for image in t)
        found = assert_close_pixels(a, t, FP16_BATCHED, job.spec.prompt)
        print(f"{model} {job.spec.prompt!r}: batch vs alone {found}")
    plain = engine.generate(spec("a red lighthouse")).images
    assert_different_pictures(alone[0], plain)  # the parts and the chaos change the picture
