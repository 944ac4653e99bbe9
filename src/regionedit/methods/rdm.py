"""RDM: region-aware diffusion for zero-shot text-driven editing (Huang et al., 2023).

Algorithm:
1. Locate: a positioning text ("a horse") → CLIPSeg scores, sigmoid × 255, threshold K (paper 150)
   → the edit mask M (a user mask or box overrides it).
2. Sample toward the target text ("a zebra") with classifier-free guidance (code: scale 5); at every
   step replace the sample outside M by the noised original q(x_t | x0) (latent blending: missing
   from the released script); an inpainting UNet also reads M and the kept image.
3. Guide: a CLIP loss between the target text and cutouts of the predicted x̂0 inside M (code: scale
   150, 16 cutouts), and the non-editing-region-preserving loss outside M (MSE, plus LPIPS when its
   weights are installed; code weights 10000 and 1000; broken in the released script).
4. Paste the original pixels back outside M (optionally with an edge feathered inwards).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from regionedit import __version__, checks, defaults, metrics
from regionedit.core.guidance import RegionGuidance
from regionedit.core.sampling import gaussian_noise, sample
from regionedit.core.schedule import Schedule
from regionedit.errors import RegionEditError
from regionedit.images import from_model_range, tensor_to_pil
from regionedit.mask_sources import MaskSource, resolve_source
from regionedit.masks import check_region, dilate, pad_to, resize
from regionedit.models.backend import DiffusionModel
from regionedit.segment import DEFAULT_THRESHOLD, TextSegmenter

DEFAULT_STEPS = defaults.RDM_STEPS
DEFAULT_GUIDANCE = defaults.RDM_GUIDANCE
DEFAULT_CLIP_SCALE = defaults.RDM_CLIP_SCALE
DEFAULT_CUTOUTS = defaults.RDM_CUTOUTS
DEFAULT_NERP_MSE = defaults.RDM_NERP_MSE
DEFAULT_NERP_LPIPS = defaults.RDM_NERP_LPIPS
DEFAULT_ETA = defaults.RDM_ETA
MAX_CUTOUTS = 256
MAX_PIXELS = 4096  # dilation and feathering above this are mistakes (and would allocate (H + 2p)² pixels)


@dataclass
class RDMOutput:
    image: Image.Image
    mask: torch.Tensor  # 1×1×H×W: the edit region at the output's size
    scores: torch.Tensor | None  # the segmenter's scores (0..255) when the mask came from text
    sample: torch.Tensor
    background_psnr: float  # outside the mask, before paste-back (100 dB = identical)
    recipe: dict
    pixels: torch.Tensor | None = None  # 1×3×H×W in [0, 1]: the image before 8-bit rounding


class _Guided:
    """ε̂ with the region guidance applied (the sampler calls it under no_grad)."""

    def __init__(self, denoiser, guidance: RegionGuidance | None, schedule: Schedule):
        self.denoiser, self.guidance, self.schedule = denoiser, guidance, schedule

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.denoiser(x, t)
        if self.guidance is None or not self.guidance.active:
            return eps
        return self.guidance.correct(x, self.schedule.index_of(int(t)), eps)


def feathered(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Soften the mask's edge inwards only, so that pixels outside it keep weight 0."""
    if pixels <= 0:
        return mask
    size = 2 * pixels + 1
    soft = F.avg_pool2d(F.pad(mask, (pixels,) * 4, mode="replicate"), size, stride=1)
    return soft * mask


def region_mask(model: DiffusionModel, working: torch.Tensor, locate: str | None, mask: torch.Tensor | None,
                segmenter: TextSegmenter | None, threshold: float, dilation: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The edit region at the working size, from a given mask or from the positioning text."""
    size = tuple(working.shape[-2:])
    if mask is not None:
        return dilate(resize(mask.float(), size).to(model.device), dilation), None
    if segmenter is None or locate is None:
        raise RegionEditError("RDM needs a positioning text (locate) and a text segmenter, or a mask "
                              "(CLI: --locate, or --mask / --box)")
    located = segmenter.locate(from_model_range(working), locate, threshold, dilation)
    return located.mask.to(model.device), located.scores


def edit(
    model: DiffusionModel,
    image,
    target: str,
    locate: str | None = None,
    mask: torch.Tensor | MaskSource | str | None = None,
    segmenter: TextSegmenter | None = None,
    clip=None,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    threshold: float = DEFAULT_THRESHOLD,
    dilation: int = 0,
    clip_guidance_scale: float = DEFAULT_CLIP_SCALE,
    cutouts: int = DEFAULT_CUTOUTS,
    nerp_mse: float = DEFAULT_NERP_MSE,
    nerp_lpips: float = DEFAULT_NERP_LPIPS,
    blend: bool = True,
    paste_back: bool = True,
    feather: int = 0,
    eta: float = DEFAULT_ETA,
    seed: int = 0,
    max_side: int | None = None,
    progress: bool = True,
) -> RDMOutput:
    """Replace what ``locate`` names (or ``mask`` covers) by ``target``, keeping the rest.

    ``mask``: a tensor at the input's size, or any mask source (:mod:`regionedit.mask_sources`:
    file, box, brush, text, ZONE's attention, a segment pick), resolved on ``image``; it wins over
    ``locate``. ``blend=False`` samples the whole latent freely (the ablation without step 2's
    blending: only NERP and paste-back then keep the background)."""
    if not model.is_text_conditional:
        raise RegionEditError(f"RDM needs a text-conditional model; {model.name} is unconditional")
    if not target or not target.strip():
        raise RegionEditError("the target text is empty: say what the region should become")
    for name, value in (("guidance_scale", guidance_scale), ("clip_guidance_scale", clip_guidance_scale),
                        ("nerp_mse", nerp_mse), ("nerp_lpips", nerp_lpips)):
        checks.number(name, value, 0)
    threshold, eta, seed = checks.number("threshold", threshold, 0, 255), checks.number("eta", eta, 0, 1), checks.seed(seed)
    dilation, feather = checks.integer("dilation", dilation, 0, MAX_PIXELS), checks.integer("feather", feather, 0, MAX_PIXELS)
    cutouts = checks.integer("cutouts", cutouts, 1, MAX_CUTOUTS)
    given = None
    if mask is not None:  # any mask source (text, attention, segment pick, file, box, brush) or a tensor
        given = resolve_source(mask, image, model, "RDM")
        mask = given.mask
    pixels, fit = model.fit_image(image, max_side)
    working = fit.crop(pixels)
    region, scores = region_mask(model, working, locate, mask, segmenter, threshold, dilation)
    if given is not None and given.scores is not None:
        scores = given.scores  # at the input's size
    check_region(region, "the edit region")
    if clip is None and clip_guidance_scale > 0:  # the paper's guidance is on by default: never drop it silently
        raise RegionEditError(f"clip_guidance_scale is {clip_guidance_scale:g} but no CLIP model was given: pass clip=... "
                              "or set clip_guidance_scale=0")
    padded_size = (fit.padded_size[1], fit.padded_size[0])
    region_padded = pad_to(region, padded_size)

    x0 = model.encode(pixels)
    region_sample = (F.adaptive_max_pool2d(region_padded, x0.shape[-2:]) > 0).float()  # any covered pixel
    schedule = Schedule.from_scheduler(model.scheduler, num_inference_steps)
    generator = torch.Generator().manual_seed(seed)
    denoiser = (model.denoiser(target, guidance_scale, inpaint_mask=region_padded, inpaint_image=pixels)
                if model.is_inpainting else model.denoiser(target, guidance_scale))
    guidance = None
    if (clip is not None and clip_guidance_scale > 0) or nerp_mse > 0 or nerp_lpips > 0:
        guidance = RegionGuidance(model, schedule, region_padded, region_sample, pixels, clip if clip_guidance_scale > 0 else None,
                                  target, clip_guidance_scale, cutouts, nerp_mse, nerp_lpips, seed)

    def keep_background(i: int, x: torch.Tensor) -> torch.Tensor:
        """Outside M, the sample at the level after step i is the noised original."""
        a = schedule.at(schedule.alpha_bar_prev, i, x)
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        return region_sample * x + (1 - region_sample) * (a.sqrt() * x0 + (1 - a).sqrt() * noise)

    start = torch.randn(x0.shape, generator=generator).to(model.device)
    result = sample(_Guided(denoiser, guidance, schedule), schedule, start, gaussian_noise(schedule, eta, generator),
                    eta=eta, callback=keep_background if blend else None, progress=progress)
    edited = fit.crop(model.decode(result))
    background_psnr = float(metrics.psnr(from_model_range(edited), from_model_range(working), region.cpu(), "outside")[0])
    if paste_back:
        weight = feathered(region, feather)
        edited = weight * edited + (1 - weight) * working
    recipe = {
        "method": "rdm", "version": __version__, "model": model.name, "locate": locate, "target": target,
        "mask_from": "text" if mask is None else "user", "mask_source": given.source if given is not None else None, "threshold": threshold, "dilation": dilation,
        "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "eta": eta,
        "clip_model": getattr(clip, "name", None) if clip is not None else None, "clip_guidance_scale": clip_guidance_scale,
        "cutouts": cutouts, "nerp_mse": nerp_mse, "nerp_lpips": nerp_lpips if guidance and guidance.lpips_weight else 0.0,
        "blend": blend, "paste_back": paste_back, "feather": feather, "seed": seed,
        "segmenter": segmenter.name if segmenter is not None and mask is None else None,
    }
    return RDMOutput(tensor_to_pil(edited[0]), region.cpu(), scores, result, background_psnr, recipe,
                     from_model_range(edited).cpu())
