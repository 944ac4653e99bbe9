"""The model backend: batched guidance, prediction types, image fitting, prompts."""

import pytest
import torch
from PIL import Image

from regionedit.errors import RegionEditError
from regionedit.models import DiffusionModel, default_dtype
from regionedit.models.tiny import tiny_pixel_ddpm


def test_cpu_defaults_to_fp32(sd_model):
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("cuda") == torch.float16
    assert sd_model.dtype == torch.float32 and next(sd_model.unet.parameters()).dtype == torch.float32


def test_model_descriptions(pixel_model, sd_model, ip2p_model):
    assert (pixel_model.conditioning, pixel_model.is_latent, pixel_model.size_multiple) == ("none", False, 2)
    assert (sd_model.conditioning, sd_model.is_latent, sd_model.vae_scale_factor) == ("text", True, 8)
    assert sd_model.size_multiple == 16 and sd_model.native_resolution == 64
    assert ip2p_model.conditioning == "instruct" and ip2p_model.unet.config.in_channels == 8


def test_classifier_free_guidance_is_one_batched_call(sd_model, monkeypatch):
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900, 500, 20])
    text, empty = sd_model.encode_prompt("a red ball"), sd_model.encode_prompt("")
    expected_uncond = sd_model.unet_eps(x, t, empty.expand(3, -1, -1))
    expected_text = sd_model.unet_eps(x, t, text.expand(3, -1, -1))
    expected = expected_uncond + 7.5 * (expected_text - expected_uncond)

    calls = []
    original = sd_model.unet.forward
    monkeypatch.setattr(sd_model.unet, "forward", lambda *a, **k: calls.append(a[0].shape[0]) or original(*a, **k))
    eps = sd_model.denoiser("a red ball", 7.5)(x, t)
    assert calls == [6]
    assert torch.allclose(eps, expected, atol=1e-5)


def test_instruct_guidance_uses_three_branches(ip2p_model):
    source = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    image_latents = ip2p_model.encode_source_image(source)
    assert torch.allclose(image_latents, ip2p_model.vae.encode(source).latent_dist.mode())  # unscaled
    text, empty = ip2p_model.encode_prompt("make it blue"), ip2p_model.encode_prompt("")
    def branch(emb, img):
        return ip2p_model.unet_eps(x, 300, emb.expand(2, -1, -1), img.expand(2, -1, -1, -1))
    e_text, e_image = branch(text, image_latents), branch(empty, image_latents)
    e_uncond = branch(empty, torch.zeros_like(image_latents))
    expected = e_uncond + 7.5 * (e_text - e_image) + 1.5 * (e_image - e_uncond)
    eps = ip2p_model.denoiser("make it blue", 7.5, source_image=source, image_guidance_scale=1.5)(x, 300)
    # The denoiser runs the three branches as one batch of 6, the reference as three batches of 2:
    # float32 kernels may round each ε̂ differently by ~1e-6·|ε̂|, and the guidance sums the three with
    # weights whose absolute values add up to 1 + 2·7.5 + 2·1.5 = 19, so the error bound is 19× that.
    amplification = 1 + 2 * 7.5 + 2 * 1.5
    tolerance = amplification * 1e-6 * float(expected.abs().max()) * 4  # ×4: a few roundings per UNet output
    assert torch.allclose(eps, expected, rtol=0, atol=max(tolerance, 1e-6))
    with pytest.raises(RegionEditError, match="source image"):
        ip2p_model.denoiser("make it blue", 7.5)


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_other_prediction_types_are_converted_to_epsilon(kind):
    components = tiny_pixel_ddpm()
    components["scheduler"].register_to_config(prediction_type=kind)
    model = DiffusionModel(**components, device="cpu")
    x0, eps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    t = torch.tensor([700, 50])
    a = model.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    output = a.sqrt() * eps - (1 - a).sqrt() * x0 if kind == "v_prediction" else x0
    assert torch.allclose(model.to_eps(output, x_t, t), eps, atol=1e-4)


def test_fit_image_pads_to_the_multiple_and_downscales(sd_model):
    image = Image.new("RGB", (100, 37), (10, 200, 30))
    x, fit = sd_model.fit_image(image)
    assert fit.padded_size == (112, 48) and tuple(x.shape) == (1, 3, 48, 112)
    assert fit.crop(x).shape[-2:] == (37, 100)
    x, fit = sd_model.fit_image(Image.new("RGB", (640, 480)), max_side=64)
    assert fit.working_size == (64, 48) and fit.padded_size == (64, 48)
    with pytest.raises(RegionEditError, match="1×3×H×W"):
        sd_model.fit_image(torch.rand(3, 8, 8))


def test_prompt_rules(pixel_model, sd_model):
    with pytest.raises(RegionEditError, match="unconditional"):
        pixel_model.denoiser("a face")
    with pytest.raises(RegionEditError, match="text-conditional"):
        sd_model.denoiser(None)
    with pytest.raises(RegionEditError, match="≥ 0"):
        sd_model.denoiser("a", guidance_scale=-1)
    a, b = sd_model.encode_prompt(["a red ball", "a blue box"])
    assert not torch.allclose(a, b)
    assert torch.equal(sd_model.encode_prompt("a red ball")[0], a)


def test_half_precision_weights_give_float32_predictions():
    """The GPU path (fp16/bf16 weights, fp32 arithmetic around the UNet), exercised on the CPU in bf16."""
    from regionedit.models import load_model

    model = load_model("tiny/sd", device="cpu", dtype=torch.bfloat16)
    assert next(model.unet.parameters()).dtype == torch.bfloat16
    x0 = model.encode(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert x0.dtype == torch.float32
    eps = model.denoiser("a ball", 3.5)(torch.randn(2, 4, 8, 8), torch.tensor([800, 100]))
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()
