"""Randomly initialised tiny versions of every supported architecture, for tests and benchmarks.

Each builder is deterministic in its seed and returns the components; :func:`save_tiny` writes
them as a diffusers folder (``model_index.json`` + one subfolder per component) that
:func:`regionedit.models.load_model` reads like any hub download.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from transformers import CLIPTextConfig, CLIPTextModel

from regionedit.models.tokenizer import build_clip_tokenizer

TEXT_DIM = 32


def _seeded(build: Callable[[], dict], seed: int) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def sd_scheduler() -> DDIMScheduler:
    """The noise schedule of Stable Diffusion 1.x/2.x (scaled-linear β, ᾱ_final = ᾱ_0)."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_pixel_ddpm(seed: int = 0, sample_size: int = 32) -> dict:
    """A pixel-space DDPM like google/ddpm-ema-celebahq-256, with 2 levels and 32/64 channels."""

    def build() -> dict:
        unet = UNet2DModel(
            sample_size=sample_size,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=8,
        )
        return {"unet": unet, "scheduler": DDPMScheduler(num_train_timesteps=1000)}

    return _seeded(build, seed)


def _tiny_text_config(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def _tiny_text_encoder(tokenizer) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(**_tiny_text_config(tokenizer)))


def _tiny_vae() -> AutoencoderKL:
    """Four levels like SD's VAE (downscale 8), with 8–16 channels."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _tiny_conditional_unet(in_channels: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def _tiny_latent_text_model(unet_in_channels: int, seed: int) -> dict:
    def build() -> dict:
        tokenizer = build_clip_tokenizer()
        return {
            "unet": _tiny_conditional_unet(unet_in_channels),
            "vae": _tiny_vae(),
            "text_encoder": _tiny_text_encoder(tokenizer),
            "tokenizer": tokenizer,
            "scheduler": sd_scheduler(),
        }

    return _seeded(build, seed)


def tiny_sd(seed: int = 0) -> dict:
    """Stable-Diffusion-shaped: latent UNet with cross-attention, 4-level VAE, CLIP text encoder."""
    return _tiny_latent_text_model(unet_in_channels=4, seed=seed)


def tiny_ip2p(seed: int = 0) -> dict:
    """InstructPix2Pix-shaped: the tiny SD with an 8-channel UNet input (x_t ‖ source latents)."""
    return _tiny_latent_text_model(unet_in_channels=8, seed=seed)


def sd15_sized_random(seed: int = 0, in_channels: int = 4) -> dict:
    """Random weights of the real Stable Diffusion 1.5 architecture (860 M UNet; 8 input channels for
    InstructPix2Pix), for GPU benchmarks."""

    def build() -> dict:
        tokenizer = build_clip_tokenizer()
        text = CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, in_channels=in_channels)
        return {"unet": unet, "vae": vae, "text_encoder": CLIPTextModel(text), "tokenizer": tokenizer,
                "scheduler": sd_scheduler()}

    return _seeded(build, seed)


def tiny_ip2p_b(seed: int = 1) -> dict:
    """A second tiny InstructPix2Pix (another seed): the MagicBrush of ZONE's fused pair in tests."""
    return tiny_ip2p(seed)


def tiny_sd_inpaint(seed: int = 0) -> dict:
    """Stable-Diffusion-inpainting-shaped: a 9-channel UNet input (x_t ‖ mask ‖ masked-image latents)."""
    return _tiny_latent_text_model(unet_in_channels=9, seed=seed)


def tiny_clip(seed: int = 0) -> dict:
    """A CLIP (vision and text towers) like openai/clip-vit-base-patch32, 2 layers of width 32, 64² input."""
    from transformers import CLIPConfig, CLIPModel

    def build() -> dict:
        tokenizer = build_clip_tokenizer()
        config = CLIPConfig(text_config=_tiny_text_config(tokenizer), projection_dim=16,
                            vision_config=dict(hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
                                               num_attention_heads=4, image_size=64, patch_size=8))
        return {"model": CLIPModel(config), "tokenizer": tokenizer}

    return _seeded(build, seed)


def tiny_clipseg(seed: int = 0) -> dict:
    """A text-prompted segmenter like CIDAS/clipseg-rd64-refined, 3 layers of width 32, 64² input."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    def build() -> dict:
        tokenizer = build_clip_tokenizer()
        text = _tiny_text_config(tokenizer) | {"num_hidden_layers": 3}
        config = CLIPSegConfig(text_config=text, projection_dim=16, extract_layers=[1, 2], reduce_dim=16,
                               decoder_num_attention_heads=2, decoder_intermediate_size=32,
                               vision_config=dict(hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=3,
                                                  num_attention_heads=4, image_size=64, patch_size=8))
        return {"model": CLIPSegForImageSegmentation(config), "tokenizer": tokenizer}

    return _seeded(build, seed)


def tiny_sam(seed: int = 0) -> dict:
    """Segment Anything's architecture (ViT encoder, prompt encoder, mask decoder) at width 32, 256² input."""
    from transformers import SamConfig, SamModel

    def build() -> dict:
        config = SamConfig(
            vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=256, patch_size=16,
                               output_channels=32, mlp_dim=64, global_attn_indexes=[1], window_size=4, num_pos_feats=16),
            prompt_encoder_config=dict(hidden_size=32, image_size=256, patch_size=16, mask_input_channels=4),
            mask_decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                                     iou_head_hidden_dim=32),
        )
        return {"model": SamModel(config)}

    return _seeded(build, seed)


PIPELINE_CLASS = {
    UNet2DModel: "DDPMPipeline",
    UNet2DConditionModel: "StableDiffusionPipeline",
}


def save_tiny(components: dict, folder: str | Path) -> Path:
    """Write components as a diffusers pipeline folder, or a transformers model and its tokenizer
    side by side in one folder (as hub repos of CLIP and CLIPSeg are laid out)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if "model" in components:
        for component in components.values():
            component.save_pretrained(folder)
        return folder
    index: dict = {"_class_name": PIPELINE_CLASS[type(components["unet"])], "_diffusers_version": "0.42.1"}
    in_channels = components["unet"].config.in_channels
    if in_channels != components["unet"].config.out_channels:
        index["_class_name"] = {8: "StableDiffusionInstructPix2PixPipeline", 9: "StableDiffusionInpaintPipeline"}[in_channels]
    for name, component in components.items():
        component.save_pretrained(folder / name)
        library = "transformers" if type(component).__module__.startswith("transformers") else "diffusers"
        index[name] = [library, type(component).__name__]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


TINY_BUILDERS: dict[str, Callable[..., dict]] = {
    "tiny/pixel-ddpm": tiny_pixel_ddpm,
    "tiny/sd": tiny_sd,
    "tiny/ip2p": tiny_ip2p,
    "tiny/ip2p-b": tiny_ip2p_b,
    "tiny/sd-inpaint": tiny_sd_inpaint,
    "tiny/clip": tiny_clip,
    "tiny/clipseg": tiny_clipseg,
    "tiny/sam": tiny_sam,
}
