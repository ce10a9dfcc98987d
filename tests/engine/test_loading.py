from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from pixels import LOADERS, assert_close_pixels

from imaginebot.engine import DiffusionEngine, GenerateSpec, find_model_folder, load_engine
from imaginebot.engine.devices import resolve_device, resolve_dtype
from imaginebot.engine.tiny import TinyComponents, save_sd, tiny_sd
from imaginebot.errors import ConfigError, ModelNotFound

MakeEngine = Callable[..., DiffusionEngine]
SPEC = GenerateSpec("a boat", width=32, height=32, num_inference_steps=3, seeds=(1, 2))


def test_folder_loads_like_the_in_memory_model(tmp_path: Path, make_engine: MakeEngine) -> None:
    c = tiny_sd(seed=3, latent_channels=3)
    folder = save_sd(c, tmp_path / "model")
    engine = load_engine(folder, device="cpu")
    assert engine.dtype == torch.float32 and not engine.is_sdxl
    assert engine.native_size == 32 and engine.latent_rgb.source == "fitted"
    assert_close_pixels(engine.generate(SPEC).images, make_engine(c).generate(SPEC).images, LOADERS)


def test_sdxl_folder(tmp_path: Path, sdxl: TinyComponents) -> None:
    StableDiffusionXLPipeline(
        vae=sdxl.vae,
        text_encoder=sdxl.text_encoder,
        text_encoder_2=sdxl.text_encoder_2,
        tokenizer=sdxl.tokenizer,
        tokenizer_2=sdxl.tokenizer_2,
        unet=sdxl.unet,
        scheduler=sdxl.scheduler,
        add_watermarker=False,
    ).save_pretrained(tmp_path / "xl")
    engine = load_engine(tmp_path / "xl", device="cpu", dtype="float32")
    assert engine.is_sdxl
    assert len(engine.generate(SPEC).images) == 2


def test_hub_id_from_the_local_cache(tmp_path: Path, sd: TinyComponents) -> None:
    repo = tmp_path / "cache" / "models--someone--tiny-sd"
    save_sd(sd, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    folder = find_model_folder("someone/tiny-sd", cache_dir=tmp_path / "cache")
    assert folder == repo / "snapshots" / "0123abcd"
    assert load_engine("someone/tiny-sd", device="cpu", cache_dir=tmp_path / "cache").native_size == 32


def test_missing_hub_id_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as excinfo:
        load_engine("someone/not-there", cache_dir=tmp_path)
    message = str(excinfo.value)
    assert str(tmp_path) in message and "hf download someone/not-there" in message


def test_missing_folder_and_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="not a folder"):
        load_engine(tmp_path / "nope" / "deeper")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match=r"model_index\.json"):
        load_engine(tmp_path / "empty")


def test_device_and_dtype_strings() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ConfigError, match="dtype 'half'"):
        resolve_dtype("half", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda:0")


def test_loading_a_checkpoint_says_nothing_about_accelerate(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # accelerate is a dependency: without it diffusers warns at every start that it loads with more memory.
    folder = save_sd(tiny_sd(seed=1), tmp_path / "model")
    capfd.readouterr()
    load_engine(folder, device="cpu")
    assert "accelerate" not in capfd.readouterr().err
