"""Edit-friendly DDPM inversion: schedule arithmetic, exact reconstruction, batching, files."""

import pytest
import torch
from diffusers import DDIMScheduler

from regionedit.core.inversion import DDPMInversion, invert, sample_from_noise_maps
from regionedit.core.schedule import Schedule
from regionedit.errors import RegionEditError
from regionedit.images import pil_to_tensor
from regionedit.methods import ddpm_edit

STEPS = 100


MODELS_AND_SAMPLES = [("pixel_model", None, (1, 3, 32, 48)), ("sd_model", "a red ball", (1, 4, 8, 12))]


def random_sample(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def invert_sample(model, x0, prompt, guidance_scale, steps, **options):
    options.setdefault("progress", False)
    return invert(model, latents=x0, prompt=prompt, guidance_scale=guidance_scale, num_inference_steps=steps, **options)


@pytest.mark.parametrize("name", ["pixel_model", "sd_model"])
def test_schedule_step_matches_diffusers_ddim(name, request):
    """μ + σ z equals diffusers' DDIMScheduler.step with η = 1 and the same variance noise."""
    model = request.getfixturevalue(name)
    schedule = Schedule.from_scheduler(model.scheduler, 20)
    ddim = DDIMScheduler.from_config(model.scheduler.config, clip_sample=False)  # the paper never clips x̂0
    ddim.set_timesteps(20)
    assert torch.equal(schedule.timesteps, ddim.timesteps.long())
    x = random_sample((1, model.channels, 8, 8), 1)
    eps, z = random_sample(x.shape, 2), random_sample(x.shape, 3)
    for i in (0, 7, 19):
        ours = schedule.mean(i, x, eps, eta=1.0) + schedule.sigma(1.0)[i].float() * z
        theirs = ddim.step(eps, int(schedule.timesteps[i]), x, eta=1.0, variance_noise=z).prev_sample
        assert torch.allclose(ours, theirs, atol=1e-5), i


def test_sigma_is_ddpm_posterior_std_for_full_schedule(pixel_model):
    """With all 1000 steps, σ_t² equals the DDPM posterior variance β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t)."""
    schedule = Schedule.from_scheduler(pixel_model.scheduler, 1000)
    alphas = pixel_model.scheduler.alphas_cumprod.double()
    t = torch.arange(1, 1000)
    betas = 1 - alphas[t] / alphas[t - 1]
    assert torch.allclose(betas, pixel_model.scheduler.betas[t].double(), rtol=1e-3)
    expected = betas * (1 - alphas[t - 1]) / (1 - alphas[t])
    variance = schedule.sigma(1.0).flip(0)[1:] ** 2
    assert torch.allclose(variance, expected, rtol=1e-9)


@pytest.mark.parametrize("name,prompt,shape", MODELS_AND_SAMPLES)
def test_step_by_step_inversion_reconstructs_exactly(name, prompt, shape, request):
    """The paper's property: invert, reverse with the same prompt → x0 (fp32, max abs error ≤ 1e-4)."""
    model = request.getfixturevalue(name)
    x0 = random_sample(shape)
    inversion = invert_sample(model, x0, prompt, 3.5, STEPS, seed=0, batched=False)
    reconstruction = sample_from_noise_maps(model.denoiser(prompt, 3.5), inversion)
    assert (reconstruction - x0).abs().max() <= 1e-4


@pytest.mark.parametrize("name,prompt,shape", MODELS_AND_SAMPLES)
def test_batched_noise_maps_match_step_by_step(name, prompt, shape, request):
    model = request.getfixturevalue(name)
    x0 = random_sample(shape)
    sequential = invert_sample(model, x0, prompt, 3.5, STEPS, seed=0, batched=False)
    batched = invert_sample(model, x0, prompt, 3.5, STEPS, seed=0, batched=True, batch_size=16)
    assert (batched.zs - sequential.zs).abs().max() <= 1e-4
    assert (batched.xts - sequential.xts).abs().max() <= 1e-5
    # Reversing batched maps: UNet rounding differs between batch sizes (~1e-6) and the η-sampler
    # expands differences by up to 1/√ᾱ_T (≈140 for the linear pixel schedule) on random weights.
    reconstruction = sample_from_noise_maps(model.denoiser(prompt, 3.5), batched)
    assert (reconstruction - x0).abs().max() <= 2e-3


def test_inversion_of_an_image_and_its_reconstruction(pixel_model, photo):
    inversion = invert(pixel_model, photo, num_inference_steps=30, seed=0, batched=False, progress=False)
    output = ddpm_edit.reconstruct(pixel_model, inversion, progress=False)
    assert output.image.size == photo.size
    diff = (pil_to_tensor(output.image) - pil_to_tensor(photo)) * 127.5
    assert diff.abs().max() <= 1.0001  # 8-bit rounding only
    assert output.recipe["method"] == "ddpm_reconstruct" and output.recipe["seed"] == 0


def test_latent_model_handles_non_square_and_odd_sizes(sd_model, photo):
    image = photo.resize((70, 50))
    inversion = invert(sd_model, image, prompt="a photo", num_inference_steps=10, seed=0, progress=False)
    assert inversion.fit.padded_size == (80, 64)  # multiples of 16 for the tiny SD
    assert inversion.x0.shape[-2:] == (8, 10)
    output = ddpm_edit.edit(sd_model, inversion, "a photo of a cat", skip=3, progress=False)
    assert output.image.size == (70, 50)


def test_same_seed_same_result_other_seed_other_inversion(sd_model):
    x0 = random_sample((1, 4, 8, 8))
    a = invert_sample(sd_model, x0, "a ball", 3.5, 20, seed=1)
    b = invert_sample(sd_model, x0, "a ball", 3.5, 20, seed=1)
    c = invert_sample(sd_model, x0, "a ball", 3.5, 20, seed=2)
    assert torch.equal(a.zs, b.zs) and torch.equal(a.xts, b.xts)
    assert not torch.allclose(a.xts, c.xts) and not torch.allclose(a.zs, c.zs)
    edit_a = ddpm_edit.edit(sd_model, a, "a blue box", skip=5, progress=False).sample
    edit_b = ddpm_edit.edit(sd_model, b, "a blue box", skip=5, progress=False).sample
    edit_c = ddpm_edit.edit(sd_model, c, "a blue box", skip=5, progress=False).sample
    assert torch.equal(edit_a, edit_b)
    assert (edit_a - edit_c).abs().max() > 1e-2


def test_changed_prompt_changes_the_output(sd_model):
    x0 = random_sample((1, 4, 8, 8))
    inversion = invert_sample(sd_model, x0, "a red ball", 3.5, 30, seed=0)
    same = ddpm_edit.edit(sd_model, inversion, "a red ball", 3.5, skip=10, progress=False).sample
    other = ddpm_edit.edit(sd_model, inversion, "a green tree", 15.0, skip=10, progress=False).sample
    assert (same - x0).abs().max() < 2e-3
    assert (other - x0).abs().max() > 1e-1


def test_inversion_file_round_trip(sd_model, photo, tmp_path):
    inversion = invert(sd_model, photo, prompt="an astronaut", num_inference_steps=12, seed=3, progress=False)
    path = inversion.save(tmp_path / "inv.safetensors")
    loaded = DDPMInversion.load(path)
    for key in ("x0", "xts", "zs", "noise_scale"):
        assert torch.equal(getattr(loaded, key), getattr(inversion, key))
    assert torch.equal(loaded.schedule.timesteps, inversion.schedule.timesteps)
    assert (loaded.prompt, loaded.guidance_scale, loaded.seed, loaded.fit) == ("an astronaut", 3.5, 3, inversion.fit)
    direct = ddpm_edit.edit(sd_model, inversion, "a cat", skip=4, progress=False)
    from_file = ddpm_edit.edit(sd_model, loaded, "a cat", skip=4, progress=False)
    assert torch.equal(direct.sample, from_file.sample)
    assert not list(tmp_path.glob(".*.tmp"))


def test_loading_a_non_inversion_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "x.safetensors"
    bogus.write_bytes(b"not safetensors at all")
    with pytest.raises(RegionEditError, match="cannot read inversion"):
        DDPMInversion.load(bogus)
    with pytest.raises(RegionEditError, match="not found"):
        DDPMInversion.load(tmp_path / "missing.safetensors")


def test_bad_arguments_raise_clear_errors(sd_model, pixel_model):
    x0 = random_sample((1, 4, 8, 8))
    with pytest.raises(RegionEditError, match="guidance_scale must be ≥ 0"):
        invert_sample(sd_model, x0, "a", -1.0, 10)
    with pytest.raises(RegionEditError, match="text-conditional"):
        invert_sample(sd_model, x0, None, 3.5, 10)
    with pytest.raises(RegionEditError, match="unconditional"):
        invert_sample(pixel_model, random_sample((1, 3, 8, 8)), "a face", 3.5, 10)
    with pytest.raises(RegionEditError, match="either an image or latents"):
        invert(sd_model, prompt="a")
    inversion = invert_sample(sd_model, x0, "a", 3.5, 10)
    with pytest.raises(RegionEditError, match="skip must be in"):
        ddpm_edit.edit(sd_model, inversion, "b", skip=10, progress=False)
    with pytest.raises(RegionEditError, match="guidance_scale must be ≥ 0"):
        ddpm_edit.edit(sd_model, inversion, "b", guidance_scale=-2, progress=False)
    with pytest.raises(RegionEditError, match="channels"):
        ddpm_edit.edit(pixel_model, inversion, None, skip=1, progress=False)


def test_shift_translates_the_whole_noise_path(pixel_model):
    x0 = random_sample((1, 3, 16, 16))
    inversion = invert_sample(pixel_model, x0, None, 0, 10, seed=0)
    shifted = ddpm_edit.shift(inversion, dx=3, dy=-2)
    assert torch.equal(shifted.zs[..., :-2, 3:], inversion.zs[..., 2:, :-3])
    assert torch.equal(shifted.xts[..., :-2, 3:], inversion.xts[..., 2:, :-3])
    assert torch.equal(shifted.x0[..., :-2, 3:], inversion.x0[..., 2:, :-3])
    assert not torch.equal(shifted.zs[..., :, :3], inversion.zs[..., :, :3])  # fresh noise enters
    residual = inversion.schedule.sigma(inversion.eta) == 0  # the last step of a DDPM config (final ᾱ = 1)
    assert residual.any() and (~residual).any()
    assert torch.all(shifted.zs[residual][..., :, :3] == 0)  # a residual map gets no noise in the strip
    assert torch.all(shifted.zs[~residual][..., :, :3] != 0)
    unchanged = ddpm_edit.shift(inversion, 0, 0)
    assert torch.equal(unchanged.zs, inversion.zs)
    with pytest.raises(RegionEditError, match="larger than the sample"):
        ddpm_edit.shift(inversion, dx=16, dy=0)


def test_tint_changes_maps_only_inside_the_mask(pixel_model):
    x0 = random_sample((1, 3, 16, 16))
    inversion = invert_sample(pixel_model, x0, None, 0, 10, seed=0)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:8, 4:8] = 1
    tinted = ddpm_edit.tint(inversion, (0.5, 0.0, -0.5), mask)
    delta = tinted.zs - inversion.zs
    assert torch.all(delta[:, :, ~mask[0, 0].bool()] == 0)
    assert torch.allclose(delta[:, 0, 4:8, 4:8], torch.full((10, 4, 4), 0.5))
    assert torch.allclose(delta[:, 2, 4:8, 4:8], torch.full((10, 4, 4), -0.5))
    assert torch.equal(tinted.xts[1:], inversion.xts[1:])
    with pytest.raises(RegionEditError, match="3 values"):
        ddpm_edit.tint(inversion, (1.0,))
