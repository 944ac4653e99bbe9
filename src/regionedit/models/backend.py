"""The model backend: one object for a UNet, its noise schedule, an optional VAE and text encoder.

Supported: pixel DDPMs (``UNet2DModel``), Stable Diffusion 1.x/2.x (``UNet2DConditionModel`` +
``AutoencoderKL`` + CLIP text) and InstructPix2Pix-style UNets whose input is the noisy sample
concatenated with the source image (8 channels for SD). Pixel-space text-conditional models
(the toy world's) are the same as SD without a VAE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from regionedit import checks
from regionedit.errors import RegionEditError
from regionedit.images import pil_to_tensor


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """fp16 on a GPU, fp32 on the CPU (CPU half precision is slow and inexact)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


@dataclass(frozen=True)
class ImageFit:
    """How an input image was fitted to a model: optional downscale, then padding to a multiple."""

    original_size: tuple[int, int]  # (width, height) of the input
    working_size: tuple[int, int]  # after the optional downscale; the size of every output
    padded_size: tuple[int, int]  # after reflection padding on the right and bottom

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Remove the padding from a pixel tensor."""
        width, height = self.working_size
        return x[..., :height, :width]

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict) -> ImageFit:
        return cls(**{k: tuple(v) for k, v in data.items()})


class DiffusionModel:
    """A denoising UNet with everything needed to go from images and text to noise predictions.

    ``conditioning`` is ``"none"`` (unconditional), ``"text"`` or ``"instruct"`` (text plus a
    source image concatenated to the UNet input, three-branch guidance).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler,
        vae: torch.nn.Module | None = None,
        text_encoder: torch.nn.Module | None = None,
        tokenizer=None,
        name: str = "model",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.name = name
        self.unet = self._place(unet)
        self.scheduler = scheduler
        self.vae = self._place(vae)
        self.text_encoder = self._place(text_encoder)
        self.tokenizer = tokenizer
        if (text_encoder is None) != (tokenizer is None):
            raise RegionEditError(f"model {name}: a text encoder needs a tokenizer and vice versa")
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
        self._prompt_cache: dict[str, torch.Tensor] = {}

    def _place(self, module: torch.nn.Module | None) -> torch.nn.Module | None:
        """Move to the device (and dtype, only if it differs: diffusers warns on every dtype cast)."""
        if module is None:
            return None
        module = module.to(self.device)
        if next(module.parameters()).dtype != self.dtype:
            module = module.to(self.dtype)
        return module.eval().requires_grad_(False)

    # ----------------------------------------------------------------- description
    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def is_text_conditional(self) -> bool:
        return self.text_encoder is not None

    @property
    def is_instruct(self) -> bool:
        return self.unet.config.in_channels == 2 * self.unet.config.out_channels

    @property
    def is_inpainting(self) -> bool:
        """SD-inpainting style: the UNet also reads the mask and the masked image's latents."""
        return self.unet.config.in_channels == 2 * self.unet.config.out_channels + 1

    @property
    def conditioning(self) -> str:
        if self.is_instruct:
            return "instruct"
        if self.is_inpainting:
            return "inpaint"
        return "text" if self.is_text_conditional else "none"

    @property
    def channels(self) -> int:
        """Channels of the diffused sample (3 for pixel models, 4 for SD latents)."""
        return self.unet.config.out_channels

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (VAE factor times the UNet's downsampling)."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        size = self.unet.config.sample_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        return int(size) * self.vae_scale_factor

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.get("prediction_type", "epsilon")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "conditioning": self.conditioning,
            "space": "latent" if self.is_latent else "pixel",
            "native_resolution": self.native_resolution,
            "size_multiple": self.size_multiple,
            "prediction_type": self.prediction_type,
            "unet_parameters": sum(p.numel() for p in self.unet.parameters()),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    # ----------------------------------------------------------------- images
    def fit_image(self, image: Image.Image | torch.Tensor, max_side: int | None = None) -> tuple[torch.Tensor, ImageFit]:
        """Image → 1×3×H×W tensor in [-1, 1] whose sides are multiples of :attr:`size_multiple`.

        An image larger than ``max_side`` is downscaled (aspect kept); the sides are then padded
        by reflection on the right and bottom, and outputs are cropped back (:meth:`ImageFit.crop`).
        """
        if isinstance(image, torch.Tensor):
            if image.dim() != 4 or image.shape[:2] != (1, 3):
                raise RegionEditError(f"image tensor must be 1×3×H×W in [0, 1], got shape {tuple(image.shape)}")
            image = Image.fromarray((image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())
        max_side = checks.optional_integer("max_side", max_side, 1)
        width, height = image.size
        original = (width, height)
        if max_side is not None and max(width, height) > max_side:
            scale = max_side / max(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        m = self.size_multiple
        padded = (-(-width // m) * m, -(-height // m) * m)
        x = pil_to_tensor(image)
        pad_right, pad_bottom = padded[0] - width, padded[1] - height
        if pad_right or pad_bottom:
            mode = "reflect" if pad_right < width and pad_bottom < height else "replicate"
            x = F.pad(x, (0, pad_right, 0, pad_bottom), mode=mode)
        return x.to(self.device), ImageFit(original, (width, height), padded)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] → the diffused sample x0 (scaled VAE latents, or the pixels)."""
        if self.vae is None:
            return pixels.to(self.device, torch.float32)
        posterior = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return posterior.mode().float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """The diffused sample → pixels in [-1, 1]."""
        return self.decode_differentiable(x0)

    def decode_differentiable(self, x0: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` that lets gradients through (for guidance losses on pixels)."""
        if self.vae is None:
            return x0.float().clamp(-1, 1)
        latents = (x0 / self.vae.config.scaling_factor).to(self.device, self.dtype)
        return self.vae.decode(latents).sample.float().clamp(-1, 1)

    @torch.no_grad()
    def encode_source_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """The source-image input of an instruct UNet: unscaled VAE latents' mode, or the pixels."""
        if self.vae is None:
            return pixels.to(self.device, torch.float32)
        return self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist.mode().float()

    # ----------------------------------------------------------------- text
    @torch.no_grad()
    def encode_prompt(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Prompts → text-encoder hidden states B×L×D (cached per prompt)."""
        if not self.is_text_conditional:
            raise RegionEditError(f"model {self.name} is unconditional: it takes no prompt")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            tokens = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            hidden = self.text_encoder(tokens.input_ids.to(self.device))[0].float()
            for prompt, h in zip(missing, hidden, strict=True):
                self._prompt_cache[prompt] = h
        return torch.stack([self._prompt_cache[p] for p in prompts])

    # ----------------------------------------------------------------- noise prediction
    def unet_eps(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        text: torch.Tensor | None = None,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One UNet call → ε̂ in float32, whatever the model's prediction type.

        ``t`` is a scalar or one timestep per sample; ``text`` the hidden states (B×L×D);
        ``source`` the channels appended to x_t: the instruct model's image input, or an inpainting
        model's mask and masked-image latents (B×C×H×W).
        """
        t = self._timesteps_for(x_t, t)
        model_input = x_t if source is None else torch.cat([x_t, source], dim=1)
        model_input = model_input.to(self.dtype)
        if text is None:
            out = self.unet(model_input, t).sample
        else:
            out = self.unet(model_input, t, encoder_hidden_states=text.to(self.dtype)).sample
        return self.to_eps(out.float(), x_t.float(), t)

    def to_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert the UNet's output (ε, v or x0 prediction) into ε̂."""
        kind = self.prediction_type
        if kind == "epsilon":
            return out
        alpha_bar = self.alphas_cumprod.to(x_t.device)[t].float().view(-1, 1, 1, 1)
        if kind == "v_prediction":
            return alpha_bar.sqrt() * out + (1 - alpha_bar).sqrt() * x_t
        if kind == "sample":
            return (x_t - alpha_bar.sqrt() * out) / (1 - alpha_bar).sqrt()
        raise RegionEditError(f"model {self.name}: unsupported prediction_type {kind!r}")

    def _timesteps_for(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.device).long()
        return t.expand(x_t.shape[0]) if t.dim() == 0 else t

    @torch.no_grad()
    def inpainting_inputs(self, mask: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """The extra UNet input of an inpainting model: mask (1 = repaint) ‖ latents of the kept image."""
        kept = self.encode(pixels.to(self.device) * (1 - mask.to(self.device)))
        small = F.interpolate(mask.to(self.device).float(), size=kept.shape[-2:], mode="nearest")
        return torch.cat([small, kept], dim=1)

    def denoiser(
        self,
        prompt: str | None = None,
        guidance_scale: float = 1.0,
        negative_prompt: str = "",
        source_image: torch.Tensor | None = None,
        image_guidance_scale: float = 1.5,
        inpaint_mask: torch.Tensor | None = None,
        inpaint_image: torch.Tensor | None = None,
    ) -> Denoiser:
        """A function (x_t, t) → ε̂ with classifier-free guidance done in one batched UNet call.

        Instruct models need ``source_image`` (pixels in [-1, 1]); inpainting models need
        ``inpaint_mask`` (1×1×H×W, 1 = repaint) and ``inpaint_image`` (pixels).
        """
        for name, value in (("guidance_scale", guidance_scale), ("image_guidance_scale", image_guidance_scale)):
            checks.number(name, value)
            if value < 0:
                raise RegionEditError(f"{name} must be ≥ 0, got {value}")
        if self.is_instruct:
            if prompt is None or source_image is None:
                raise RegionEditError(f"model {self.name} is an instruct model: it needs an instruction and a source image")
        elif source_image is not None:
            raise RegionEditError(f"model {self.name} takes no source image (not an instruct model)")
        if self.is_text_conditional and prompt is None:
            raise RegionEditError(f"model {self.name} is text-conditional: give a prompt ('' for unconditional)")
        if not self.is_text_conditional and prompt:
            raise RegionEditError(f"model {self.name} is unconditional: it takes no prompt")
        extra = None
        if self.is_inpainting:
            if inpaint_mask is None or inpaint_image is None:
                raise RegionEditError(f"model {self.name} is an inpainting model: it needs a mask and the image")
            extra = self.inpainting_inputs(inpaint_mask, inpaint_image)
        return Denoiser(self, prompt, guidance_scale, negative_prompt, source_image, image_guidance_scale, extra)


class Denoiser:
    """ε̂(x_t, t) for one model and one conditioning, guidance included.

    Branch layouts follow diffusers: text models ``[uncond, text]``; instruct models
    ``[text, image, uncond]`` with source inputs ``[image, image, zeros]``.
    """

    def __init__(self, model: DiffusionModel, prompt, guidance_scale, negative_prompt, source_image, image_guidance_scale,
                 extra_input: torch.Tensor | None = None):
        self.model = model
        self.guidance_scale = float(guidance_scale)
        self.image_guidance_scale = float(image_guidance_scale)
        self.text = self.negative = self.source = None
        self.extra = extra_input  # channels appended to x_t in every branch (inpainting models)
        if model.is_text_conditional:
            self.text = model.encode_prompt(prompt)
            self.negative = model.encode_prompt(negative_prompt)
        if source_image is not None:
            self.source = model.encode_source_image(source_image)

    @property
    def uses_guidance(self) -> bool:
        return self.text is not None and self.guidance_scale != 1.0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        model = self.model
        batch = x_t.shape[0]
        t = model._timesteps_for(x_t, t)
        if self.source is not None:
            return self._instruct(x_t, t, batch)
        extra = self.extra.expand(batch, -1, -1, -1) if self.extra is not None else None
        if self.text is None:
            return model.unet_eps(x_t, t, source=extra)
        text = self.text.expand(batch, -1, -1)
        if not self.uses_guidance:
            return model.unet_eps(x_t, t, text, extra)
        negative = self.negative.expand(batch, -1, -1)
        eps = model.unet_eps(x_t.repeat(2, 1, 1, 1), t.repeat(2), torch.cat([negative, text]),
                             extra.repeat(2, 1, 1, 1) if extra is not None else None)
        eps_uncond, eps_text = eps.chunk(2)
        return eps_uncond + self.guidance_scale * (eps_text - eps_uncond)

    def _instruct(self, x_t: torch.Tensor, t: torch.Tensor, batch: int) -> torch.Tensor:
        source = self.source.expand(batch, -1, -1, -1)
        text = self.text.expand(batch, -1, -1)
        negative = self.negative.expand(batch, -1, -1)
        eps = self.model.unet_eps(
            x_t.repeat(3, 1, 1, 1),
            t.repeat(3),
            torch.cat([text, negative, negative]),
            torch.cat([source, source, torch.zeros_like(source)]),
        )
        eps_text, eps_image, eps_uncond = eps.chunk(3)
        return (
            eps_uncond
            + self.guidance_scale * (eps_text - eps_image)
            + self.image_guidance_scale * (eps_image - eps_uncond)
        )
