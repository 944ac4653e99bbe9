"""RDM: masks from text, blended sampling, CLIP guidance inside / NERP outside, paste-back, CLI, bench."""

import json

import pytest
import torch

from regionedit.cli import main
from regionedit.core.guidance import RegionGuidance, make_cutouts
from regionedit.core.schedule import Schedule
from regionedit.errors import NothingLocated, RegionEditError
from regionedit.images import pil_to_tensor, read_recipe, save_png, tensor_to_pil
from regionedit.methods import rdm
from regionedit.segment import load_clip, load_segmenter
from regionedit.toyworld.scenes import generate_edits

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    edits = generate_edits([5], actions=["change_colour"])
    return edits.source.images, edits.mask, edits.source_object[0], edits.target_object[0]


@pytest.fixture(scope="module")
def segmenter():
    return load_segmenter("tiny/clipseg", "cpu")


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny/clip", "cpu")


def as_unit(image):
    return (pil_to_tensor(image) + 1) / 2


def test_paste_back_keeps_every_pixel_outside_the_mask(sd_model, scene, clip):
    image, mask, _, target = scene
    for feather in (0, 2):
        out = rdm.edit(sd_model, image, target, mask=mask, clip=clip, num_inference_steps=STEPS, feather=feather,
                       progress=False)
        result = as_unit(out.image)
        outside = out.mask.expand_as(result) == 0
        assert torch.equal((result * 255).round()[outside], (image * 255).round()[outside])
        assert (result - image).abs()[~outside].max() > 0.05  # something was generated inside
    raw = rdm.edit(sd_model, image, target, mask=mask, clip=None, clip_guidance_scale=0, num_inference_steps=STEPS,
                   paste_back=False, nerp_mse=0, progress=False)
    assert raw.background_psnr < 100 and (as_unit(raw.image) - image).abs().max() > 0.05


def test_text_located_mask_and_recipe(sd_model, scene, segmenter):
    image, _, locate, target = scene
    out = rdm.edit(sd_model, image, target, locate=locate, segmenter=segmenter, threshold=120, clip_guidance_scale=0,
                   num_inference_steps=STEPS, progress=False)
    assert out.scores is not None and out.scores.shape[-2:] == image.shape[-2:]
    assert torch.equal(out.mask, (out.scores >= 120).float())
    result = as_unit(out.image)
    outside = out.mask.expand_as(result) == 0
    assert torch.equal((result * 255).round()[outside], (image * 255).round()[outside])
    assert out.recipe["locate"] == locate and out.recipe["mask_from"] == "text" and out.recipe["threshold"] == 120


def test_positioning_text_that_matches_nothing(sd_model, scene):
    image, _, _, target = scene
    blind = load_segmenter("tiny/clipseg", "cpu")
    with torch.no_grad():
        blind.model.decoder.transposed_convolution.bias.fill_(-1e4)  # every pixel scores 0
    with pytest.raises(RegionEditError, match=r"matched nothing .* lower the threshold or give a mask \(CLI: --threshold, --mask / --box\)"):
        rdm.edit(sd_model, image, target, locate="the ball", segmenter=blind, progress=False)


def test_clip_guidance_gradient_is_zero_outside_the_mask(sd_model, scene, clip):
    image, mask, _, target = scene
    pixels, _ = sd_model.fit_image(image)
    x0 = sd_model.encode(pixels)
    region_sample = (torch.nn.functional.adaptive_max_pool2d(mask, x0.shape[-2:]) > 0).float()
    schedule = Schedule.from_scheduler(sd_model.scheduler, 20)
    guidance = RegionGuidance(sd_model, schedule, mask, region_sample, pixels, clip, target, clip_scale=150.0,
                              mse_weight=10000.0, lpips_weight=0.0)
    x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    grads = guidance.gradients(x, 10, torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    assert torch.all(grads.clip[(region_sample == 0).expand_as(grads.clip)] == 0)
    assert grads.clip.abs().max() > 0
    assert grads.nerp.abs().max() > 0  # the background term acts where the CLIP term may not


def test_cutouts_are_deterministic_and_differentiable():
    images = torch.rand(1, 3, 20, 30, requires_grad=True)
    a = make_cutouts(images, 4, 8, torch.Generator().manual_seed(0))
    b = make_cutouts(images, 4, 8, torch.Generator().manual_seed(0))
    assert a.shape == (4, 3, 8, 8) and torch.equal(a, b)
    a.sum().backward()
    assert images.grad.abs().sum() > 0


def test_inpainting_unet_reads_the_mask_and_kept_image(scene):
    from regionedit.models import load_model

    model = load_model("tiny/sd-inpaint", device="cpu")
    assert model.conditioning == "inpaint"
    image, mask, _, target = scene
    seen = []
    hook = model.unet.conv_in.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    try:
        out = rdm.edit(model, image, target, mask=mask, num_inference_steps=3, clip_guidance_scale=0, nerp_mse=0,
                       progress=False)
    finally:
        hook.remove()
    assert set(seen) == {9}
    assert out.image.size == (64, 64)
    with pytest.raises(RegionEditError, match="inpainting model"):
        model.denoiser("a ball", 5.0)


def test_latent_blending_keeps_the_sample_outside_the_mask_at_the_original(sd_model, scene):
    image, mask, _, target = scene
    out = rdm.edit(sd_model, image, target, mask=mask, num_inference_steps=STEPS, clip_guidance_scale=0, nerp_mse=0,
                   paste_back=False, progress=False)
    pixels, _ = sd_model.fit_image(image)
    x0 = sd_model.encode(pixels)
    outside = (torch.nn.functional.adaptive_max_pool2d(mask, x0.shape[-2:]) == 0).expand_as(x0)
    # After the last step the background is q(x_final | x0): √ᾱ₀ x0 + √(1 − ᾱ₀) ε with ᾱ₀ = 0.99915.
    assert (out.sample - x0)[outside].abs().max() < 0.2
    free = rdm.edit(sd_model, image, target, mask=mask, num_inference_steps=STEPS, clip_guidance_scale=0, nerp_mse=0,
                    blend=False, paste_back=False, progress=False)
    assert free.recipe["blend"] is False and out.recipe["blend"] is True
    assert (free.sample - x0)[outside].abs().max() > 1.0  # the ablation: nothing holds the background


def test_bad_inputs(sd_model, pixel_model, scene):
    image, mask, _, target = scene
    with pytest.raises(RegionEditError, match="text-conditional"):
        rdm.edit(pixel_model, image, target, mask=mask, progress=False)
    with pytest.raises(RegionEditError, match="target text is empty"):
        rdm.edit(sd_model, image, " ", mask=mask, progress=False)
    with pytest.raises(RegionEditError, match="needs a positioning text"):
        rdm.edit(sd_model, image, target, progress=False)
    with pytest.raises(RegionEditError, match="empty"):
        rdm.edit(sd_model, image, target, mask=torch.zeros_like(mask), progress=False)
    with pytest.raises(RegionEditError, match="≥ 0"):
        rdm.edit(sd_model, image, target, mask=mask, clip_guidance_scale=-1, progress=False)
    with pytest.raises(RegionEditError, match="clip_guidance_scale is 150 but no CLIP model was given"):
        rdm.edit(sd_model, image, target, mask=mask, progress=False)


@pytest.fixture
def scene_file(tmp_path, scene):
    return save_png(tensor_to_pil(scene[0][0] * 2 - 1), tmp_path / "scene.png")


def test_cli_edit_rdm(scene_file, tmp_path, capsys):
    out, mask_out = tmp_path / "out.png", tmp_path / "mask.png"
    common = ["--model", "tiny/sd", "--steps", str(STEPS), "-q"]
    assert main(["edit", "rdm", str(scene_file), "--locate", "the ball", "--target", "a blue ball", "--threshold", "100",
                 "-o", str(out), "--mask-out", str(mask_out), *common]) == 0
    assert read_recipe(out)["method"] == "rdm" and mask_out.exists()
    assert main(["edit", "rdm", str(scene_file), "--box", "10,10,40,40", "--target", "a box", "--clip", "none",
                 "--no-blend", "-o", str(tmp_path / "box.png"), *common]) == 0
    assert read_recipe(tmp_path / "box.png")["blend"] is False  # paste-back still keeps every outside pixel:
    before = as_unit(__import__("PIL.Image", fromlist=["Image"]).open(scene_file))
    after = as_unit(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "box.png"))
    inside = torch.zeros_like(before, dtype=torch.bool)
    inside[..., 10:40, 10:40] = True
    assert torch.equal(before[~inside], after[~inside])
    assert main(["edit", "rdm", str(scene_file), "--target", "x", "-o", str(tmp_path / "a.png"), *common]) == 2
    assert "exactly one of --locate" in capsys.readouterr().err
    assert main(["edit", "rdm", str(scene_file), "--target", "x", "--locate", "a", "--box", "1,1,5,5",
                 "-o", str(tmp_path / "b.png"), *common]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["edit", "rdm", str(scene_file), "--target", "x", "--box", "1,1,5,5", "--cfg", "-1",
                 "-o", str(tmp_path / "c.png"), *common]) == 2
    assert "--cfg must be ≥ 0" in capsys.readouterr().err


def test_bench_rdm_tiny_overhead(tmp_path):
    out = tmp_path / "rdm.json"
    assert main(["bench", "rdm", "--tiny", "--device", "cpu", "--steps", "20", "--json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    for key in ("plain_s", "rdm_s", "rdm_guided_s", "rdm_over_plain", "rdm_guided_over_plain"):
        assert key in result
    assert result["rdm_over_plain"] > 0  # a ratio is reported; its value is a benchmark figure, not a unit-test bar


def test_bench_quality_runs_rdm_on_change_actions():
    from regionedit.bench.quality import make_method, run_quality

    method = make_method("rdm", "scenes", {"model": "tiny/sd", "segmenter": "tiny/clipseg", "clip": "tiny/clip",
                                           "num_inference_steps": 3, "threshold": 1})
    result = run_quality("scenes", method, count=3)
    assert set(result["results"]) <= {"change_colour", "change_object", "overall"}
    assert result["results"]["overall"]["mask_iou"] is not None


def test_bench_quality_rdm_on_the_ground_truth_mask_edits_exactly_that_region():
    from regionedit.bench.quality import make_method, run_quality

    method = make_method("rdm", "scenes", {"model": "tiny/sd", "segmenter": "nothing/never-loaded", "clip": "tiny/clip",
                                           "region": "gt", "num_inference_steps": 3})
    assert method.name == "rdm-gtmask"
    result = run_quality("scenes", method, count=3)
    overall = result["results"]["overall"]
    # the region is the ground truth, and paste-back (the default) keeps everything outside it
    assert overall["mask_iou"] == 1.0 and overall["background_psnr"] == 100.0
    with pytest.raises(RegionEditError, match="'located'.*'gt'"):
        make_method("rdm", "scenes", {"model": "tiny/sd", "region": "box"})


def test_bench_quality_rdm_takes_the_target_object_or_the_whole_target_caption():
    from regionedit.bench.quality import benchmark_items, make_method

    items = benchmark_items("scenes", 2, actions=("change_colour",))
    for target, field in (("object", "target_object"), ("caption", "target_caption")):
        method = make_method("rdm", "scenes", {"model": "tiny/sd", "clip": "tiny/clip", "region": "gt", "target": target,
                                               "num_inference_steps": 1, "clip_guidance_scale": 0})
        prompts = []
        method.editor = lambda image, prompt, **kwargs: prompts.append(prompt) or method_output(image)
        method.edit(items)
        assert prompts == [item.record[field] for item in items]
    with pytest.raises(RegionEditError, match="'object'.*'caption'"):
        make_method("rdm", "scenes", {"model": "tiny/sd", "region": "gt", "target": "instruction"})


def method_output(image):
    """An editor's result as the RDM adapter reads it: the input unchanged, an empty edit mask."""
    from types import SimpleNamespace

    from regionedit.images import tensor_to_pil

    return SimpleNamespace(image=tensor_to_pil(image[0] * 2 - 1), masks={"edit": torch.zeros(1, 1, *image.shape[-2:])})


def test_bench_quality_counts_a_refused_edit_as_a_failure_and_goes_on():
    from regionedit.bench.quality import make_method, markdown_table, run_quality

    method = make_method("rdm", "scenes", {"model": "tiny/sd", "segmenter": "tiny/clipseg", "clip": "tiny/clip",
                                           "num_inference_steps": 3, "threshold": 1, "clip_guidance_scale": 0})
    editor = method.editor

    def run(refuse: set[int]) -> dict:
        calls = []

        def locating(image, prompt, **kwargs):
            calls.append(prompt)
            if len(calls) in refuse:
                raise NothingLocated("the positioning text matched nothing")
            return editor(image, prompt, **kwargs)

        method.editor = locating
        result = run_quality("scenes", method, count=3)
        assert len(calls) == 3  # a refusal does not stop the run
        return result

    all_three, second_refused, only_second = run(set()), run({2}), run({1, 3})
    assert "refused" not in all_three["results"]["overall"]
    row = second_refused["results"]["overall"]
    assert row["refused"] == round(1 / 3, 4) and only_second["results"]["overall"]["refused"] == round(2 / 3, 4)
    # the refused input is left out of the background figures (it would score a perfect background)
    # and scores IoU 0: the three-item means are exactly the two kinds of rows put together
    l1 = [r["results"]["overall"]["background_l1"] for r in (all_three, second_refused, only_second)]
    assert abs(3 * l1[0] - (2 * l1[1] + l1[2])) < 5e-4
    iou = [r["results"]["overall"]["mask_iou"] for r in (all_three, second_refused, only_second)]
    assert abs(iou[1] - (3 * iou[0] - 3 * iou[2]) / 3) < 5e-4 and iou[0] > iou[1]
    assert "refused (counted as failures)" in markdown_table(second_refused)

    def misconfigured(image, prompt, **kwargs):
        raise RegionEditError("no CLIP model was given")

    method.editor = misconfigured  # any other error is the run's, not one edit's
    with pytest.raises(RegionEditError, match="no CLIP"):
        run_quality("scenes", method, count=1)
