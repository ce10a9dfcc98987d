"""Single-file checkpoints in the LDM key layout (A1111 / ComfyUI), loaded with no network."""

from __future__ import annotations

import gc
import json
import shutil
import socket
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
    infer_diffusers_model_type,
)
from ldm_layout import (  # tests/engine/, on the path as the test's own folder
    SD1_TEXT,
    SD2_TEXT,
    SDXL_TEXT,
    ldm_checkpoint,
    save_single_file,
)
from pixels import LOADERS, assert_close_pixels
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from imaginebot.engine import GenerateSpec, load_engine
from imaginebot.engine.clip_tokenizer import VOCAB_SIZE, clip_tokenizer
from imaginebot.engine.planning import Planner
from imaginebot.engine.single_file import (
    KEY_IN,
    KEY_V1,
    KEY_V2,
    KEY_XL_BASE,
    KEY_XL_REFINER,
    SD1,
    SD2_BASE,
    SD2_V,
    SDXL,
    SUPPORTED,
    CheckpointKind,
    Header,
    check_weights,
    checkpoint_kind,
    detect_kind,
    load_single_file,
    read_header,
)
from imaginebot.errors import ModelNotFound

SPEC = GenerateSpec("a photo of a cat", width=64, height=64, num_inference_steps=2, seeds=(7,))

# Each kind's marker keys (diffusers' CHECKPOINT_KEY_NAMES), with their real shapes, and one key of each part.
_VAE = {"first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}
SD1_KEYS = {
    KEY_IN: (320, 4, 3, 3),
    KEY_V2: (320, 768),
    KEY_V1: (320, 640, 1, 1),
    **_VAE,
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
}
SD2_KEYS = {
    **{key: shape for key, shape in SD1_KEYS.items() if not key.startswith("cond_stage_model.")},
    KEY_V2: (320, 1024),
    "cond_stage_model.model.token_embedding.weight": (49408, 1024),
}
SDXL_KEYS = {
    KEY_IN: (320, 4, 3, 3),
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
    KEY_XL_BASE: (1280,),
    **_VAE,
    "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
    "conditioner.embedders.1.model.positional_embedding": (77, 1280),
}


def header(shapes: dict[str, tuple[int, ...]], path: Path = Path("model.safetensors"), **kw: Any) -> Header:
    return Header(path, shapes, **kw)


def diffusers_type(shapes: dict[str, tuple[int, ...]]) -> str:
    """What diffusers itself makes of the same header (meta tensors: shapes, no memory)."""
    return str(infer_diffusers_model_type({k: torch.empty(s, device="meta") for k, s in shapes.items()}))


def one_line(e: pytest.ExceptionInfo[ModelNotFound]) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every attempt to open a connection is recorded (and fails): the test asserts there were none."""
    attempts: list[Any] = []

    def connect(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(OSError, match="no network"):  # what HTTP clients call, down to the patched method
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    attempts.clear()
    yield attempts
    assert attempts == []


# -- the tokenizer -------------------------------------------------------------------------------------------


def test_clip_tokenizer_from_the_shipped_merges() -> None:
    tokenizer = clip_tokenizer(SD1.folder / "tokenizer")
    assert len(tokenizer) == VOCAB_SIZE == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("An astronaut riding a horse").input_ids == [49406, 550, 18376, 6765, 320, 4558, 49407]
    padded = tokenizer("a cat", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(padded) == 77 and padded[:4] == [49406, 320, 2368, 49407] and set(padded[4:]) == {49407}


@pytest.mark.parametrize(
    ("folder", "pad_id"),
    [
        (SD1.folder / "tokenizer", 49407),
        (SD2_V.folder / "tokenizer", 0),
        (SD2_BASE.folder / "tokenizer", 0),
        (SDXL.folder / "tokenizer", 49407),
        (SDXL.folder / "tokenizer_2", 0),  # OpenCLIP pads with "!"
    ],
)
def test_each_tokenizer_pads_as_its_model_does(folder: Path, pad_id: int) -> None:
    tokenizer = clip_tokenizer(folder)
    assert tokenizer.pad_token_id == pad_id
    assert (
        tokenizer("a cat", padding="max_length", max_length=6).input_ids
        == [49406, 320, 2368, 49407] + [pad_id] * 2
    )


# -- the kind, from the header -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shapes", "kind", "diffusers_name", "native"),
    [(SD1_KEYS, SD1, "v1", 512), (SD2_KEYS, SD2_V, "v2", 768), (SDXL_KEYS, SDXL, "xl_base", 1024)],
)
def test_the_kind_is_told_by_diffusers_marker_keys(
    tmp_path: Path, shapes: dict[str, tuple[int, ...]], kind: CheckpointKind, diffusers_name: str, native: int
) -> None:
    assert detect_kind(header(shapes)) is kind
    assert diffusers_type(shapes) == diffusers_name
    path = tmp_path / "model.safetensors"
    save_file(
        {k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, str(path), {"format": "pt"}
    )
    assert checkpoint_kind(path) is kind
    assert Planner.from_checkpoint(path).native_size == native
    assert Planner.from_checkpoint(path).vae_scale_factor == 8


def test_sd2_is_v_prediction_unless_the_step_or_an_a1111_yaml_says_epsilon(tmp_path: Path) -> None:
    # diffusers' rule: the 512 base is told by its training step, everything else SD 2.x is 768-v
    assert detect_kind(header(SD2_KEYS, global_step=875000)) is SD2_BASE
    assert detect_kind(header(SD2_KEYS, global_step=110000)) is SD2_V
    assert detect_kind(header(SD2_KEYS)) is SD2_V
    # A1111's: a .yaml of the same name beside the checkpoint
    path = tmp_path / "v2-1_512-ema-pruned.safetensors"
    path.with_suffix(".yaml").write_text("model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n")
    assert detect_kind(header(SD2_KEYS, path)) is SD2_BASE
    path.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert detect_kind(header(SD2_KEYS, path)) is SD2_V
    assert json.loads((SD2_V.folder / "scheduler" / "scheduler_config.json").read_text())[
        "prediction_type"
    ] == ("v_prediction")
    assert json.loads((SD2_BASE.folder / "scheduler" / "scheduler_config.json").read_text())[
        "prediction_type"
    ] == ("epsilon")


def test_a_ckpt_header_gives_the_training_step(tmp_path: Path) -> None:
    path = tmp_path / "v2-1_512-ema-pruned.ckpt"
    state_dict = {k: torch.zeros(s, dtype=torch.float16) for k, s in SD2_KEYS.items()}
    torch.save({"global_step": 875000, "state_dict": state_dict}, path)
    found = read_header(path)
    assert found.global_step == 875000 and found.shapes[KEY_V2] == (320, 1024)
    assert checkpoint_kind(path) is SD2_BASE
    assert Planner.from_checkpoint(path).native_size == 512


@pytest.mark.parametrize(
    ("shapes", "what"),
    [
        ({**SD1_KEYS, KEY_IN: (320, 9, 3, 3)}, "an inpainting model (9 input channels)"),
        ({**SD1_KEYS, KEY_IN: (320, 8, 3, 3)}, "an instruct-pix2pix model (8 input channels)"),
        ({KEY_IN: (384, 4, 3, 3), KEY_XL_REFINER: (1280,)}, "an SDXL refiner"),
        (
            {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)},
            "a LoRA, not a whole model",
        ),
        ({"encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3)}, "a VAE alone, not a whole model"),
        ({"down_blocks.0.resnets.0.conv1.weight": (320, 320, 3, 3)}, "a UNet in the diffusers layout"),
        ({"weight": (3,)}, "not a Stable Diffusion checkpoint (it has no model.diffusion_model.* keys)"),
    ],
)
def test_what_the_bot_does_not_run_is_named(shapes: dict[str, tuple[int, ...]], what: str) -> None:
    with pytest.raises(ModelNotFound) as e:
        detect_kind(header(shapes, Path("/models/other.safetensors")))
    message = one_line(e)
    assert message.startswith(f"/models/other.safetensors is {what}") and message.endswith(SUPPORTED)


def test_a_checkpoint_without_a_part_says_which(tmp_path: Path) -> None:
    path = tmp_path / "no-vae.safetensors"
    save_file(
        {k: torch.zeros(s) for k, s in SD1_KEYS.items() if not k.startswith("first_stage_model.")}, str(path)
    )
    with pytest.raises(ModelNotFound) as e:
        checkpoint_kind(path)
    assert one_line(e) == (
        f"{path} is an SD 1.x checkpoint without the VAE (no first_stage_model.* keys); "
        "the bot needs a whole model"
    )


# -- files that are not (whole) checkpoints ------------------------------------------------------------------


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.safetensors"
    text.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 2132625894\n")
    with pytest.raises(ModelNotFound) as e:
        load_engine(text)
    assert one_line(e) == f"{text} is not a safetensors file: its first 8 bytes are no header length"

    pickle = tmp_path / "renamed.safetensors"
    torch.save({"state_dict": {KEY_V1: torch.zeros(1)}}, pickle)
    assert zipfile.is_zipfile(pickle)
    with pytest.raises(
        ModelNotFound, match=r"is not a safetensors file: it is a PyTorch pickle; name it \.ckpt"
    ):
        read_header(pickle)

    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes((12).to_bytes(8, "little") + b'{"a": [1, 2]}')
    with pytest.raises(
        ModelNotFound, match=r"is not a safetensors file: its header is not a table of tensors"
    ):
        read_header(garbled)

    with pytest.raises(ModelNotFound) as e:
        load_engine(tmp_path / "nowhere.safetensors")
    assert one_line(e) == f"{tmp_path / 'nowhere.safetensors'} does not exist"


def test_a_truncated_file_says_how_much_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(s) for k, s in SD1_KEYS.items()}, str(path))
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(ModelNotFound) as e:
        Planner.from_checkpoint(path)
    assert one_line(e) == (
        f"{path} is truncated: its header says {size} bytes, the file has {size - 1000} "
        "(a download that stopped? fetch it again)"
    )
    with path.open("r+b") as f:
        f.truncate(100)
    with pytest.raises(
        ModelNotFound, match=r"is truncated: its header alone is \d+ bytes, the file has 100$"
    ):
        read_header(path)

    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {k: torch.zeros(s) for k, s in SD1_KEYS.items()}}, ckpt)
    with ckpt.open("r+b") as f:
        f.truncate(ckpt.stat().st_size // 2)
    with pytest.raises(ModelNotFound) as e:
        read_header(ckpt)
    assert one_line(e).startswith(f"{ckpt}: could not read its pickle: ")


# -- loading, equal to the same weights from a folder --------------------------------------------------------


@dataclass
class Saved:
    config: Path  # the diffusers-layout configs the models were built from
    folder: Path  # the same models as a diffusers folder
    single_file: Path  # ... and as one .safetensors in the LDM layout


TEXT_PREFIXES = {SD1: SD1_TEXT, SD2_BASE: SD2_TEXT, SD2_V: SD2_TEXT, SDXL: SDXL_TEXT}


def build_models(config: Path) -> dict[str, Any]:
    """Random models (seeded by the caller) from ``config``: unet, vae, text_encoder[, text_encoder_2]."""
    models: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config, subfolder="unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(config, subfolder="vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder")),
    }
    if (config / "text_encoder_2").is_dir():
        text_config = CLIPTextConfig.from_pretrained(config / "text_encoder_2")
        models["text_encoder_2"] = CLIPTextModelWithProjection(text_config)
    return models


def ldm_tensors(kind: CheckpointKind, models: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The models' weights as ``kind``'s single file holds them."""
    text_encoders = [models[name] for name in ("text_encoder", "text_encoder_2") if name in models]
    prefixes = dict(zip(TEXT_PREFIXES[kind], text_encoders, strict=True))
    return ldm_checkpoint(models["unet"], models["vae"], prefixes)


def build(
    kind: CheckpointKind, config: Path, root: Path, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Saved:
    """Random models of ``kind``'s layout from ``config``, saved both ways, and freed."""
    torch.manual_seed(seed)
    models = build_models(config)
    folder = root / "folder"
    for name, model in models.items():
        model.to(dtype).save_pretrained(folder / name)
    for name in ("tokenizer", "tokenizer_2"):
        if (config / name).is_dir():
            clip_tokenizer(config / name).save_pretrained(folder / name)
    shutil.copytree(config / "scheduler", folder / "scheduler")  # as shipped, as a hub folder has it
    shutil.copy(config / "model_index.json", folder)
    single_file = save_single_file(ldm_tensors(kind, models), root / "model.safetensors")
    del models
    gc.collect()
    return Saved(config, folder, single_file)


_SMALL_VAE = {"block_out_channels": [8, 8, 16, 16], "norm_num_groups": 4, "sample_size": 64}
_SMALL_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}
SMALL = {  # each kind's configs with small channel counts: the same key layout, at a thousandth of the size
    SD1: {
        "unet": {
            "block_out_channels": [32, 32, 64, 64],
            "norm_num_groups": 8,
            "attention_head_dim": 2,
            "cross_attention_dim": 32,
            "sample_size": 8,
        },
        "vae": _SMALL_VAE,
        "text_encoder": {**_SMALL_CLIP, "projection_dim": 32},
    },
    SDXL: {
        "unet": {
            "block_out_channels": [32, 64, 64],
            "norm_num_groups": 8,
            "attention_head_dim": [2, 4, 4],
            "transformer_layers_per_block": [1, 1, 2],
            "cross_attention_dim": 32 + 48,  # both encoders' hidden states, side by side
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 48,  # six size/crop numbers and the pooled text
            "sample_size": 8,
        },
        "vae": _SMALL_VAE,
        "text_encoder": {**_SMALL_CLIP, "projection_dim": 32},
        # SDXL is told by its OpenCLIP's tenth layer (diffusers' marker key), which diffusers tells from the
        # CLIP by its width
        "text_encoder_2": {**_SMALL_CLIP, "hidden_size": 48, "num_hidden_layers": 10, "projection_dim": 48},
    },
}


def small_config(kind: CheckpointKind, folder: Path) -> Path:
    shutil.copytree(kind.folder, folder)
    for part, changes in SMALL[kind].items():
        file = folder / part / "config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), **changes}, indent=2))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    root = tmp_path_factory.mktemp("tiny-sd1")
    return build(SD1, small_config(SD1, root / "config"), root)


def assert_same_model(a: Any, b: Any) -> None:
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(a, part) is None and getattr(b, part) is None:
            continue
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys(), part
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part


def test_a_single_file_draws_what_the_same_weights_draw_from_a_folder(
    tiny: Saved, no_network: list[Any]
) -> None:
    expected = load_engine(tiny.folder, device="cpu", dtype="float32")
    engine = load_single_file(tiny.single_file, config=tiny.config, device="cpu", dtype="float32")
    assert engine.native_size == 64 and not engine.is_sdxl
    assert_same_model(engine, expected)
    image = np.asarray(engine.generate(SPEC).images[0])
    assert image.std() > 1  # a picture, not a blank that any two models would agree on
    assert_close_pixels(image, expected.generate(SPEC).images[0], LOADERS)


def test_an_sdxl_single_file_draws_what_its_folder_draws(tmp_path: Path, no_network: list[Any]) -> None:
    saved = build(SDXL, small_config(SDXL, tmp_path / "config"), tmp_path)
    expected = load_engine(saved.folder, device="cpu", dtype="float32")
    engine = load_single_file(saved.single_file, config=saved.config, device="cpu", dtype="float32")
    assert engine.is_sdxl and engine.tokenizer_2 is not None and engine.tokenizer_2.pad_token_id == 0
    assert_same_model(engine, expected)
    image = np.asarray(engine.generate(SPEC).images[0])
    assert image.std() > 1
    assert_close_pixels(image, expected.generate(SPEC).images[0], LOADERS)


@pytest.mark.parametrize(
    ("kind", "global_step"), [(SD1, None), (SD2_BASE, 875000), (SD2_V, None), (SDXL, None)]
)
def test_the_full_size_ldm_layout_of_each_kind_has_every_weight_the_shipped_configs_need(
    kind: CheckpointKind, global_step: int | None
) -> None:
    # the whole models on the meta device (shapes, no memory), written out in the LDM layout
    with torch.device("meta"):
        shapes = {key: tuple(t.shape) for key, t in ldm_tensors(kind, build_models(kind.folder)).items()}
    found = header(shapes, Path("/models/full.safetensors"), global_step=global_step)
    assert detect_kind(found) is kind
    assert diffusers_type(shapes) == {SD1: "v1", SD2_BASE: "v2", SD2_V: "v2", SDXL: "xl_base"}[kind]
    check_weights(found, kind)
    with pytest.raises(ModelNotFound, match=r"lacks weights of the VAE: decoder\.conv_out\.weight$"):
        check_weights(header({k: v for k, v in shapes.items() if "decoder.conv_out.weight" not in k}), kind)


def test_a_ckpt_loads_alike(tiny: Saved, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    ckpt = tmp_path / "model.ckpt"
    torch.save({"global_step": 840000, "state_dict": load_file(str(tiny.single_file))}, ckpt)
    engine = load_single_file(ckpt, config=tiny.config, device="cpu", dtype="float32")
    expected = load_single_file(tiny.single_file, config=tiny.config, device="cpu", dtype="float32")
    assert_same_model(engine, expected)


@pytest.mark.parametrize(
    ("key", "what"),
    [
        (
            "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.attn1.to_q.weight",
            "lacks weights of the UNet: up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_q.weight",
        ),
        (
            "cond_stage_model.transformer.text_model.final_layer_norm.weight",
            "lacks weights of the CLIP text encoder: final_layer_norm.weight",
        ),
        (
            "first_stage_model.decoder.mid.attn_1.q.weight",
            "lacks weights of the VAE: decoder.mid_block.attentions.0.to_q.weight",
        ),
        (
            "model.diffusion_model.out.2.weight",
            "lacks weights of the UNet: conv_out.weight",
        ),
    ],
)
def test_missing_weights_are_named_before_any_is_read(
    tiny: Saved, tmp_path: Path, key: str, what: str
) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(tiny.single_file))
    del tensors[key]
    path = tmp_path / "pruned.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ModelNotFound) as e:
        load_single_file(path, config=tiny.config, device="cpu", dtype="float32")
    assert one_line(e) == f"{path} {what}"


def test_weights_of_other_shapes_are_named(tiny: Saved, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(tiny.single_file))
    tensors["model.diffusion_model.input_blocks.1.1.proj_in.weight"] = torch.zeros(64, 32, 1, 1)
    path = tmp_path / "other.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ModelNotFound) as e:
        load_single_file(path, config=tiny.config, device="cpu", dtype="float32")
    assert one_line(e) == (
        f"{path} is not the SD 1.x architecture: the UNet's down_blocks.0.attentions.0.proj_in.weight has "
        "the shape (64, 32, 1, 1), where the config configs have (32, 32, 1, 1)"
    )


@pytest.mark.slow
def test_a_full_size_sd15_single_file_draws_what_its_folder_draws(
    tmp_path: Path, no_network: list[Any]
) -> None:
    # SD 1.5's own configs (860M UNet parameters), random weights stored in fp16 to halve the disk and memory
    saved = build(SD1, SD1.folder, tmp_path, dtype=torch.float16)
    expected_engine = load_engine(saved.folder, device="cpu", dtype="float32")
    expected = np.asarray(expected_engine.generate(SPEC).images[0])
    expected_unet = {k: v.clone() for k, v in list(expected_engine.unet.state_dict().items())[:50]}
    del expected_engine
    gc.collect()
    engine = load_engine(saved.single_file, device="cpu", dtype="float32")
    assert engine.native_size == 512 and engine.dtype == torch.float32
    assert all(torch.equal(engine.unet.state_dict()[k], v) for k, v in expected_unet.items())
    image = np.asarray(engine.generate(SPEC).images[0])
    assert image.std() > 1
    assert_close_pixels(image, expected, LOADERS)


# -- the shipped configs -------------------------------------------------------------------------------------

# The original LDM configs' model parameters (v1-inference.yaml, v2-inference(-v).yaml, sd_xl_base.yaml)
_DDCONFIG = {
    "z_channels": 4,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
}
_SD = {
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": 2,
    "transformer_depth": 1,
}
LDM_YAML = {
    "v1": (
        {
            **_SD,
            "attention_resolutions": [4, 2, 1],
            "channel_mult": [1, 2, 4, 4],
            "num_heads": 8,
            "context_dim": 768,
        },
        0.18215,
    ),
    "v2": (
        {
            **_SD,
            "attention_resolutions": [4, 2, 1],
            "channel_mult": [1, 2, 4, 4],
            "num_head_channels": 64,
            "use_linear_in_transformer": True,
            "context_dim": 1024,
        },
        0.18215,
    ),
    "xl": (
        {
            **_SD,
            "attention_resolutions": [4, 2],
            "channel_mult": [1, 2, 4],
            "num_head_channels": 64,
            "use_linear_in_transformer": True,
            "transformer_depth": [1, 2, 10],
            "context_dim": 2048,
            "num_classes": "sequential",
            "adm_in_channels": 2816,
        },
        0.13025,
    ),
}


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


@pytest.mark.parametrize(
    ("kind", "ldm", "shapes"),
    [(SD1, "v1", SD1_KEYS), (SD2_BASE, "v2", SD2_KEYS), (SD2_V, "v2", SD2_KEYS), (SDXL, "xl", SDXL_KEYS)],
)
def test_shipped_configs_agree_with_diffusers_from_the_ldm_yaml(
    kind: CheckpointKind, ldm: str, shapes: dict[str, tuple[int, ...]]
) -> None:
    unet_params, scale_factor = LDM_YAML[ldm]
    params: dict[str, Any] = {"unet_config": {"params": unet_params}, "scale_factor": scale_factor}
    params["first_stage_config"] = {"params": {"ddconfig": _DDCONFIG}}
    checkpoint = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    expected_unet = create_unet_diffusers_config_from_ldm({"model": {"params": params}}, checkpoint)
    expected_vae = create_vae_diffusers_config_from_ldm({"model": {"params": params}}, checkpoint)
    with torch.device("meta"):  # the configs with every default filled in, and no memory
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(kind.folder, subfolder="unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(kind.folder, subfolder="vae"))
    native = Planner.from_configs(unet.config, vae.config).native_size
    # diffusers takes every SD 2.x for the 768 one; the base's sizes are 512
    expected_unet["sample_size"], expected_vae["sample_size"] = native // 8, native
    for config, expected in ((unet.config, expected_unet), (vae.config, expected_vae)):
        for key, value in expected.items():
            assert _listed(config[key]) == _listed(value), key
    assert native == {SD1: 512, SD2_BASE: 512, SD2_V: 768, SDXL: 1024}[kind]
