"""The toy-world models' architectures: the toy tokenizer and vocabulary, the toy CLIP and CLIPSeg
configurations, the pixel DDPM's UNet and its noise schedule (the latent models' are in
:mod:`regionedit.toyworld.latent`).

- ``scenes-clip``: a small CLIP (vision and text towers); its text tower is the frozen text encoder
  of the scene diffusion models, as CLIP's is for SD.
- ``scenes-clipseg``: CLIPSeg on the toy CLIP.
- ``faces-ddpm``: an unconditional pixel DDPM (``UNet2DModel``, 64², cosine schedule).
"""

from __future__ import annotations

from diffusers import DDIMScheduler, UNet2DModel
from transformers import CLIPConfig, CLIPSegConfig

from regionedit.models.tokenizer import build_clip_tokenizer
from regionedit.toyworld import scenes as scenes_world

TEXT_LENGTH = 32  # toy captions and instructions are short
TEXT_WIDTH = 128


def vocabulary() -> list[str]:
    """Every word of the toy captions and instructions (plus a few general ones)."""
    words = set(scenes_world.KINDS) | set(scenes_world.COLOURS) | set(scenes_world.GROUNDS)
    for phrase in scenes_world.GROUND_PHRASE:
        words |= set(phrase.split())
    for templates in scenes_world.PHRASINGS.values():
        for template in templates:
            words |= {w for w in template.replace("{", " ").replace("}", " ").split() if w.isalpha()}
    words |= {"a", "an", "the", "and", "nothing", "sky", "ground", "face", "scene", "picture", "object"}
    return sorted(words)


def toy_tokenizer():
    return build_clip_tokenizer(vocabulary(), model_max_length=TEXT_LENGTH)


def clip_config(tokenizer) -> CLIPConfig:
    """4-layer towers of width 128; 4-pixel patches (16×16 tokens at 64²) so that CLIPSeg on top
    of it can draw masks of objects a few pixels wide."""
    text = dict(vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
                num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=TEXT_LENGTH,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=4, num_attention_heads=4,
                  image_size=64, patch_size=4)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64)


def clipseg_config(clip: CLIPConfig) -> CLIPSegConfig:
    return CLIPSegConfig(text_config=clip.text_config.to_dict(), vision_config=clip.vision_config.to_dict(),
                         projection_dim=clip.projection_dim, extract_layers=[1, 2, 3], reduce_dim=64,
                         decoder_num_attention_heads=4, decoder_intermediate_size=256)


def schedule() -> DDIMScheduler:
    """A 1000-step cosine schedule (predicting ε); DDIM picks the sampling steps."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                         set_alpha_to_one=True, prediction_type="epsilon")


def faces_unet() -> UNet2DModel:
    """2.9 M parameters; self-attention at 16²; h-space (the mid block) is 96×8×8."""
    return UNet2DModel(sample_size=64, block_out_channels=(32, 48, 64, 96), layers_per_block=2, norm_num_groups=16,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=32)

