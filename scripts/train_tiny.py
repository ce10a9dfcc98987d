"""Train the embedded default model from scratch: shapes-64, a tiny Stable-Diffusion-style model.

    .venv/bin/python scripts/train_tiny.py --seed 0 --out imaginebot/models/shapes-64

Everything comes from code: the pictures and captions (imaginebot/tinymodel), a CLIP tokenizer whose
vocabulary is the caption words, and the three networks, trained in two stages on the CPU:

1. AutoencoderKL (64×64 RGB ↔ 4×16×16 latents): reconstruction + a small KL term.
2. CLIP text encoder + UNet2DConditionModel on the frozen VAE's latents, epsilon prediction with
   Min-SNR weighting, one caption in ten dropped to "" for classifier-free guidance; EMA weights saved.

The result is a standard diffusers folder (model_index.json, tokenizer/, text_encoder/, unet/, vae/,
scheduler/) that any Stable Diffusion loader reads. Same seed, same thread count → same model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

# OpenMP threads that sleep instead of spinning while they wait: on a CPU shared with other work, spinning
# threads steal each other's time slices and a training step gets several times slower. (Set before torch
# loads its OpenMP runtime; it changes no result.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imaginebot.tinymodel import build_clip_vocab, caption_words, random_caption, random_scene, render
from imaginebot.tinymodel.vocab import BOS, EOS

MAX_TOKENS = 32  # the longest caption is 13 tokens; room for typed prompts
TEXT_HIDDEN = 128
VAE_CROP = 48  # VAE training crops, in pixels (a multiple of 4)
OFFSET_NOISE = 0.15
# SD 1.x's noise schedule, so that every sampler the engine offers knows what to do with this model.
SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    # "trailing" makes the first of few steps start from pure noise (t=999), as in training.
    timestep_spacing="trailing",
    steps_offset=1,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# 1. data ------------------------------------------------------------------------------------------


def write_tokenizer(folder: Path) -> CLIPTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_clip_vocab(caption_words())
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_TOKENS,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,  # as in SD 1.x: captions are padded with <|endoftext|>
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, indent=1) + "\n"
    )
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    for word in caption_words():  # every caption word must be one whole token
        ids = tokenizer(word).input_ids
        assert len(ids) == 3 and tokenizer.convert_ids_to_tokens(ids[1]) == word + "</w>", (word, ids)
    return tokenizer


def tokenize(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    # Exactly as a Stable Diffusion pipeline does it: padded to model_max_length, truncated.
    return tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def make_dataset(
    n: int, captions_per_image: int, rng: random.Random, tokenizer: CLIPTokenizer
) -> tuple[torch.Tensor, torch.Tensor]:
    """n training scenes: images in [-1, 1] (n, 3, 64, 64), token ids (n, captions_per_image, MAX_TOKENS)."""
    images = np.empty((n, 64, 64, 3), dtype=np.uint8)
    texts: list[str] = []
    for i in range(n):
        scene = random_scene(rng)
        images[i] = np.asarray(render(scene))
        texts += [random_caption(scene, rng) for _ in range(captions_per_image)]
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    ids = tokenize(tokenizer, texts).view(n, captions_per_image, -1)
    return pixels.contiguous(), ids


# 2. networks --------------------------------------------------------------------------------------


def make_vae() -> AutoencoderKL:
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,  # two downsamplings: 64 → 16
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        mid_block_add_attention=False,
    )
    # Start the posterior narrow (std ≈ 0.02): from std 1 the sampling noise would drown the latents for the
    # whole of a short training run, and the small KL term would never pull it down in time.
    with torch.no_grad():
        vae.quant_conv.bias[4:].fill_(-8.0)  # quant_conv follows the encoder: channels 4-7 are log-variances
    return vae


def make_text_encoder(vocab_size: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_HIDDEN * 4,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="quick_gelu",
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        projection_dim=TEXT_HIDDEN,
    )
    return CLIPTextModel(config)


def make_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        # Cross-attention at 8×8 and 4×4 only: at 16×16 it would triple the cost of a training step.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 96),
        layers_per_block=1,
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,  # diffusers' historical name: the number of heads
        norm_num_groups=16,
    )


# 3. training --------------------------------------------------------------------------------------


def train_vae(vae: AutoencoderKL, pixels: torch.Tensor, steps: int, batch: int, gen: torch.Generator) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=2e-3, total_steps=steps, pct_start=max(0.05, 2 / steps)
    )
    vae.train()
    t0 = time.time()
    for step in range(1, steps + 1):
        x = pixels[torch.randint(0, len(pixels), (batch,), generator=gen)]
        # The VAE is all convolutions: 48×48 crops teach it the same thing for half the work of 64×64.
        top, left = (int(v) for v in torch.randint(0, 64 - VAE_CROP + 1, (2,), generator=gen))
        x = x[:, :, top : top + VAE_CROP, left : left + VAE_CROP]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        rec = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)
        kl = posterior.kl().mean() / z[0].numel()
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            log(f"vae {step}/{steps} rec {rec.item():.4f} kl {kl.item():.3f} ({time.time() - t0:.0f}s)")
    vae.eval()


@torch.no_grad()
def encode_all(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    return torch.cat([vae.encode(pixels[i : i + 256]).latent_dist.mean for i in range(0, len(pixels), 256)])


class EMA:
    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # warm up: early weights fade fast
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def copy_to(self) -> None:
        for p, s in zip(self.params, self.shadow, strict=True):
            p.copy_(s)


def train_denoiser(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    latents: torch.Tensor,
    ids: torch.Tensor,
    empty_ids: torch.Tensor,
    steps: int,
    batch: int,
    gen: torch.Generator,
) -> None:
    noise_scheduler = DDPMScheduler(**SCHEDULE)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    loss_weight = torch.clamp(snr, max=5.0) / snr  # Min-SNR-5: don't spend the model on invisible detail
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=1.5e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1.5e-3, total_steps=steps, pct_start=max(0.03, 2 / steps)
    )
    ema = EMA([unet, text_encoder], decay=0.995)
    unet.train()
    text_encoder.train()
    t0, running = time.time(), 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        pick = torch.randint(0, ids.shape[1], (batch,), generator=gen)
        input_ids = ids[idx, pick]
        drop = torch.rand(batch, generator=gen) < 0.1  # classifier-free guidance: learn "no caption" too
        input_ids = torch.where(drop[:, None], empty_ids[None, :], input_ids)
        x0 = latents[idx]
        # Offset noise: SD's schedule leaves a trace of the picture at t=999 (alpha_bar 0.005), and a flat
        # background is the one thing that survives averaging 256 latent pixels: without an offset the
        # model reads the background from the noise instead of the caption, and picks it by seed.
        noise = torch.randn(x0.shape, generator=gen)
        noise = noise + OFFSET_NOISE * torch.randn((batch, x0.shape[1], 1, 1), generator=gen)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=gen)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        prompt_embeds = text_encoder(input_ids).last_hidden_state
        noise_pred = unet(noisy, t, encoder_hidden_states=prompt_embeds).sample
        per_sample = F.mse_loss(noise_pred, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.update(step)
        running += per_sample.mean().item()
        if step % 100 == 0 or step == steps:
            log(f"unet {step}/{steps} eps-mse {running / 100:.4f} ({time.time() - t0:.0f}s)")
            running = 0.0
    ema.copy_to()
    unet.eval()
    text_encoder.eval()


# 4. saving ----------------------------------------------------------------------------------------


def save(
    out: Path,
    tokenizer_dir: Path,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    unet: UNet2DConditionModel,
) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(tokenizer_dir, out / "tokenizer")
    vae.save_pretrained(out / "vae", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    EulerAncestralDiscreteScheduler(**SCHEDULE).save_pretrained(out / "scheduler")
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": __import__("diffusers").__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("imaginebot/models/shapes-64"))
    parser.add_argument("--images", type=int, default=12000, help="training pictures drawn")
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--unet-steps", type=int, default=5500)
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(".train"), help="scratch folder (git-ignored)")
    parser.add_argument(
        "--reuse-vae",
        action="store_true",
        help="skip stage 1 if WORK/vae was trained on the same pictures and settings (same result, faster)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()

    tokenizer_dir = args.work / "tokenizer"
    tokenizer = write_tokenizer(tokenizer_dir)
    pixels, ids = make_dataset(args.images, 4, rng, tokenizer)
    empty_ids = tokenize(tokenizer, [""])[0]
    log(f"data: {len(pixels)} pictures, {ids.shape[0] * ids.shape[1]} captions ({time.time() - start:.0f}s)")

    vae = make_vae()
    log(f"vae: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M parameters")
    stamp: dict[str, object] = {
        k: vars(args)[k] for k in ("seed", "images", "vae_steps", "vae_batch", "threads")
    }
    # The pictures themselves, so that a change to the drawing or caption code never reuses a stale VAE.
    stamp["pixels_sha256"] = hashlib.sha256(pixels.numpy().tobytes()).hexdigest()
    stamp_file = args.work / "vae" / "stamp.json"
    if args.reuse_vae and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        vae = AutoencoderKL.from_pretrained(args.work / "vae")
        log(f"vae: reused {args.work / 'vae'} (trained with {stamp})")
    else:
        train_vae(vae, pixels, args.vae_steps, args.vae_batch, gen)
        vae.save_pretrained(args.work / "vae", safe_serialization=True)
        stamp_file.write_text(json.dumps(stamp) + "\n")
    vae.eval()
    raw = encode_all(vae, pixels)
    scaling_factor = float(1.0 / raw.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    latents = raw * scaling_factor
    log(f"latents {tuple(latents.shape)}, scaling_factor {scaling_factor:.4f} ({time.time() - start:.0f}s)")

    # Stage 2 draws from its own seed, so that it is the same whether stage 1 ran or was reused.
    torch.manual_seed(args.seed + 1)
    gen = torch.Generator().manual_seed(args.seed + 1)
    vocab = tokenizer.get_vocab()
    text_encoder = make_text_encoder(len(vocab), vocab[BOS], vocab[EOS])
    unet = make_unet()
    n_te = sum(p.numel() for p in text_encoder.parameters())
    n_unet = sum(p.numel() for p in unet.parameters())
    log(f"text encoder: {n_te / 1e6:.2f}M parameters, unet: {n_unet / 1e6:.2f}M parameters")
    train_denoiser(unet, text_encoder, latents, ids, empty_ids, args.unet_steps, args.unet_batch, gen)

    save(args.out, tokenizer_dir, vae, text_encoder, unet)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    train_s = time.time() - start
    log(f"saved {args.out} ({size / 1e6:.1f} MB) after {train_s / 60:.1f} min")
    (args.work / "last_run.json").write_text(
        json.dumps({"seed": args.seed, "train_s": round(train_s), "args": sys.argv[1:], "bytes": size}) + "\n"
    )


if __name__ == "__main__":
    main()
