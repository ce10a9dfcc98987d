"""LoRAs per job: loaded when first used, applied to that job's calls alone, never sharing a UNet call."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from lorafiles import RANK, kohya_layout, peft_layout, random_lora
from PIL import Image
from pixels import BATCHED, LOADERS, assert_close_pixels, difference
from safetensors.torch import save_file
from test_batching import Job, run_together

from imaginebot.engine import DiffusionEngine, GenerateSpec
from imaginebot.engine.lora_files import list_loras, lora_set
from imaginebot.engine.tiny import engine_from, tiny_sd, tiny_sdxl
from imaginebot.errors import ParamError


def spec(prompt: str = "a red lighthouse", **kwargs: object) -> GenerateSpec:
    base: dict[str, object] = {"width": 32, "height": 32, "num_inference_steps": 4, "seeds": (1,)}
    return GenerateSpec(prompt, **(base | kwargs))  # type: ignore[arg-type]


def max_difference(a: tuple[Image.Image, ...], b: tuple[Image.Image, ...]) -> int:
    return difference(a, b).max_abs


# An engine that has used a LoRA runs its layers wrapped by PEFT (adapters off for a job without one):
# the same arithmetic by another path, so its pictures are compared as two loaders' are.
ADAPTERS_OFF = LOADERS


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    model = tiny_sd()
    style, other = random_lora(model, seed=1), random_lora(model, seed=2)
    save_file(kohya_layout(style), folder / "style.safetensors")
    save_file(peft_layout(style), folder / "style_peft.safetensors")
    torch.save(peft_layout(other), folder / "other.pt")
    text_only = {key: v for key, v in peft_layout(style).items() if key.startswith("text_encoder.")}
    save_file(text_only, folder / "style_text.safetensors")
    # not LoRAs for this model: a layer of the wrong shape (the UNet's, a text encoder's), layers it lacks,
    # some of them, no LoRA at all, no file it can read
    wrong = peft_layout(style)
    wrong["unet.mid_block.attentions.0.proj_in.lora_A.weight"] = torch.ones(RANK, 7, 1, 1)
    save_file(wrong, folder / "wrong_shape.safetensors")
    elsewhere = {
        k.replace("mid_block", "mid_block.attentions.9"): v.clone() for k, v in peft_layout(style).items()
    }
    save_file(
        {k: v for k, v in elsewhere.items() if k.startswith("unet.mid")}, folder / "elsewhere.safetensors"
    )
    save_file(peft_layout(style) | elsewhere, folder / "partly.safetensors")
    save_file({"unet.conv_in.weight": torch.ones(2, 2)}, folder / "checkpoint.safetensors")
    text_only["text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_A.weight"] = torch.ones(RANK, 5)
    save_file(text_only, folder / "wrong_text_shape.safetensors")
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    return folder


@pytest.fixture(scope="module")
def plain() -> DiffusionEngine:
    """A fresh engine that never had a LoRA: what a job without LoRAs must look like."""
    return engine_from(tiny_sd())


@pytest.fixture(scope="module")
def engine(lora_dir: Path) -> Iterator[DiffusionEngine]:
    # its own copy of the tiny model: PEFT changes the modules it loads into, and the session's `sd` is shared
    engine = engine_from(tiny_sd(), lora_dir=lora_dir)
    yield engine
    engine.close()


def test_a_lora_changes_the_picture_and_leaves_no_trace(
    engine: DiffusionEngine, plain: DiffusionEngine
) -> None:
    without = plain.generate(spec()).images
    styled = engine.generate(spec(loras=(("style", 1.0),))).images
    assert max_difference(styled, without) > 20
    assert_close_pixels(engine.generate(spec()).images, without, ADAPTERS_OFF)  # the next job, as fresh
    assert "style" in engine.loras.loaded


def test_kohya_and_peft_layouts_of_the_same_weights_draw_the_same(engine: DiffusionEngine) -> None:
    kohya = engine.generate(spec(loras=(("style", 1.0),))).images
    peft = engine.generate(spec(loras=(("style_peft", 1.0),))).images
    assert_close_pixels(kohya, peft, LOADERS)


def test_the_weight_scales_a_lora_and_zero_is_none(engine: DiffusionEngine, plain: DiffusionEngine) -> None:
    without = plain.generate(spec()).images
    full = engine.generate(spec(loras=(("other", 1.0),))).images
    half = engine.generate(spec(loras=(("other", 0.5),))).images
    assert max_difference(half, full) > 5 and max_difference(half, without) > 5
    assert_close_pixels(engine.generate(spec(loras=(("other", 0.0),))).images, without, ADAPTERS_OFF)
    assert engine.plan(spec(loras=(("other", 0.0),))).group == engine.plan(spec()).group


def test_a_lora_of_the_text_encoder_alone(engine: DiffusionEngine, plain: DiffusionEngine) -> None:
    text_only = engine.generate(spec(loras=(("style_text", 1.0),))).images
    styled = engine.generate(spec(loras=(("style", 1.0),))).images
    without = plain.generate(spec()).images
    assert max_difference(text_only, without) > 5 and max_difference(text_only, styled) > 5
    assert engine.loras.changes("style_text") == {"text_encoder"}


def test_two_loras_at_once(engine: DiffusionEngine) -> None:
    both = engine.generate(spec(loras=(("style", 0.7), ("other", 0.4)))).images
    swapped = engine.generate(spec(loras=(("other", 0.4), ("style", 0.7)))).images
    one = engine.generate(spec(loras=(("style", 0.7),))).images
    assert both == swapped and max_difference(both, one) > 5  # one LoRA set, in one order: the same job


def test_jobs_with_different_loras_never_share_a_call(lora_dir: Path) -> None:
    engine = engine_from(tiny_sd(), lora_dir=lora_dir)  # none loaded yet: they load as the jobs join
    specs = [
        spec("a red lighthouse", loras=(("style", 1.0),)),
        spec("a blue boat", loras=(("other", 0.8),)),
        spec("a green hill"),
        spec("a tall tower", loras=(("style", 1.0),), seeds=(2, 3)),  # shares the first one's calls
        spec("a wide field", loras=(("other", 1.0), ("style", 0.5)), num_inference_steps=3),
    ]
    groups = [engine.plan(s).group for s in specs]
    assert len(set(groups)) == 4 and groups[0] == groups[3]
    jobs = [Job(s, joins_at=t) for s, t in zip(specs, [0, 1, 1, 0, 2], strict=True)]
    together, widest = run_together(engine, jobs)  # LoRAs load as their jobs join, amid the others' steps
    assert widest == 2 and engine.loras.loaded == ["style", "other"]
    alone = [engine.generate(s).images for s in specs]
    for s, a, t in zip(specs, alone, together, strict=True):
        assert_close_pixels(a, t, BATCHED, s.prompt)
    engine.close()


def test_the_group_is_the_lora_set_in_one_form() -> None:
    assert lora_set([("b", 1), ("a", 0.5), ("c", 0)]) == (("a", 0.5), ("b", 1.0))
    assert lora_set(()) == ()


@pytest.mark.parametrize(
    ("loras", "message"),
    [
        ((("styel", 1.0),), "LoRA 'styel' is not available; did you mean 'style'"),
        ((("nothing_like_it", 1.0),), "not available; the LoRAs are: broken, checkpoint, elsewhere, other,"),
        ((("style", 2.5),), "LoRA 'style': the weight must be from 0 to 2, got 2.5"),
        ((("style", 1.0), ("style", 0.5)), "LoRA 'style' is given twice"),
        (
            (("wrong_shape", 1.0),),
            "LoRA 'wrong_shape' cannot be used with this model: its weights for the layer mid_block."
            "attentions.0.proj_in have the shape [4, 7, 1, 1], where this model needs [4, 32, 1, 1]",
        ),
        ((("wrong_text_shape", 1.0),), "its text encoder weights have the wrong shapes for this model"),
        (
            (("elsewhere", 1.0),),
            "LoRA 'elsewhere' cannot be used with this model: its layers are not this model",
        ),
        ((("partly", 1.0),), "LoRA 'partly' cannot be used with this model: only 36 of its 45 layers match"),
        (
            (("checkpoint", 1.0),),
            "LoRA 'checkpoint' cannot be used with this model: it holds no LoRA weights",
        ),
        ((("broken", 1.0),), "LoRA 'broken' cannot be used with this model: the file cannot be read"),
    ],
)
def test_a_lora_it_cannot_use_is_refused_and_the_engine_carries_on(
    engine: DiffusionEngine, plain: DiffusionEngine, loras: tuple[tuple[str, float], ...], message: str
) -> None:
    with pytest.raises(ParamError) as refused:
        engine.prepare(spec(loras=loras))
    assert message in str(refused.value)
    assert all(name not in engine.loras.loaded for name, _ in loras if name != "style")
    assert_close_pixels(engine.generate(spec()).images, plain.generate(spec()).images, ADAPTERS_OFF)


def test_an_engine_without_a_lora_folder_refuses_loras(sd_engine: DiffusionEngine) -> None:
    with pytest.raises(ParamError, match="LoRA 'style' is not available: this bot has no LoRAs"):
        sd_engine.prepare(spec(loras=(("style", 1.0),)))


def test_the_folder_lists_loras_by_stem(tmp_path: Path) -> None:
    for name in ("b.safetensors", "a.pt", "a.safetensors", "c.bin", "notes.txt", ".hidden.safetensors"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.safetensors").write_bytes(b"")
    assert list_loras(tmp_path) == {
        "a": tmp_path / "a.safetensors",  # safetensors before a pickle of the same name
        "b": tmp_path / "b.safetensors",
        "c": tmp_path / "c.bin",
    }
    assert list_loras(tmp_path / "missing") == {} and list_loras(None) == {}


def test_the_service_side_needs_no_torch() -> None:
    code = (
        "import sys, imaginebot.engine.lora_files, imaginebot.engine.planning;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sdxl_loras_reach_both_text_encoders_and_the_unet(tmp_path: Path) -> None:
    model = tiny_sdxl()
    lora = random_lora(model, seed=3, text_encoder_2=True)
    save_file(kohya_layout(lora), tmp_path / "xl.safetensors")
    save_file(peft_layout(lora), tmp_path / "xl_peft.safetensors")
    engine = engine_from(model, lora_dir=tmp_path)
    without = engine.generate(spec()).images
    kohya = engine.generate(spec(loras=(("xl", 1.0),))).images
    peft = engine.generate(spec(loras=(("xl_peft", 1.0),))).images
    assert max_difference(kohya, without) > 20
    assert_close_pixels(kohya, peft, LOADERS)
    assert_close_pixels(engine.generate(spec()).images, without, ADAPTERS_OFF)
    assert engine.loras.changes("xl") == {"unet", "text_encoder", "text_encoder_2"}
    engine.close()
