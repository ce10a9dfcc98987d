"""scripts/train_tiny.py, the command that retrains the embedded model, run end to end at a toy size: it
writes a checkpoint the bot's engine loads, and the same seed gives the same files, with or without
--reuse-vae."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (
    "text_encoder/model.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
)


def train(work: Path, out: Path, *extra: str) -> str:
    small = ["--seed", "3", "--images", "32", "--vae-steps", "8", "--unet-steps", "8"]
    small += ["--vae-batch", "4", "--unet-batch", "4"]  # every stage runs, on a handful of pictures
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train_tiny.py"),
            *small,
            "--work",
            str(work),
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(work folder, checkpoint, log) of one toy training run from scratch."""
    root = tmp_path_factory.mktemp("train")
    return root / "work", root / "first", train(root / "work", root / "first")


@pytest.mark.slow
def test_training_writes_a_checkpoint_the_engine_loads_and_is_reproducible(
    first_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    from imaginebot.engine import GenerateSpec, load_engine

    work, first, log = first_run
    assert "vae 8/8" in log and "unet 8/8" in log
    again = train(work, tmp_path / "again", "--reuse-vae")
    assert "vae: reused" in again and "vae 8/8" not in again
    for name in WEIGHTS:  # same seed, same pictures: byte for byte the same model
        assert (first / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name

    engine = load_engine(first, device="cpu", dtype="float32")
    assert engine.native_size == 64
    spec = GenerateSpec(
        prompt="a small red circle on a blue background, top left",
        negative_prompt="green",
        width=64,
        height=64,
        num_inference_steps=2,
        guidance_scale=5.0,
        sampler="euler_a",
        seeds=(1,),
    )
    (image,) = engine.generate(spec).images
    assert image.size == (64, 64)


@pytest.mark.slow
def test_reuse_vae_retrains_when_the_pictures_differ(
    first_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    shutil.copytree(first_run[0], work)
    # As if the drawing code had changed since stage 1 ran: same seed and settings, other pictures.
    stamp_file = work / "vae" / "stamp.json"
    stamp = json.loads(stamp_file.read_text())
    stamp_file.write_text(json.dumps({**stamp, "pixels_sha256": "0" * 64}))
    again = train(work, tmp_path / "again", "--reuse-vae")
    assert "vae 8/8" in again and "vae: reused" not in again
    assert json.loads(stamp_file.read_text()) == stamp
