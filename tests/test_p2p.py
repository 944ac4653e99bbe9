"""Prompt-to-Prompt on the edit-friendly noise space (and DDIM), attention control, diversity, CLI, bench."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from regionedit.bench.p2p import diversity
from regionedit.cli import main
from regionedit.core.attention import AttentionControl, attention_layers, controlled_attention
from regionedit.core.inversion import ddim_invert, invert, sample_from_noise_maps
from regionedit.errors import RegionEditError
from regionedit.images import pil_to_tensor, read_recipe
from regionedit.methods import ddpm_edit, p2p

STEPS, SKIP = 10, 2
SOURCE = "a red ball on the grass"


@pytest.fixture(scope="module")
def inversion(sd_model):
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    return invert(sd_model, latents=x0, prompt=SOURCE, guidance_scale=3.5, num_inference_steps=STEPS, seed=0,
                  progress=False)


def run(model, inversion, prompt="a blue ball on the grass", **options):
    options = {"skip": SKIP, "progress": False, **options}
    return p2p.edit(model, inversion, prompt, **options)


# ------------------------------------------------------------------------------- tokens
def test_replace_or_refine_is_chosen_by_token_count(sd_model, inversion):
    source = p2p.prompt_tokens(sd_model, "a red ball")
    same = p2p.token_map(source, p2p.prompt_tokens(sd_model, "a blue ball"), 77)
    assert same.mode == "replace" and torch.equal(same.source_index, torch.arange(77)) and same.keep.min() == 1
    longer = p2p.prompt_tokens(sd_model, "a big blue ball")
    refine = p2p.token_map(source, longer, 77)
    assert refine.mode == "refine"
    # BOS a [big blue] ball EOS ← BOS a red ball EOS: new words keep their own attention
    assert refine.keep[:6].tolist() == [1, 1, 0, 0, 1, 1]
    assert refine.source_index[[0, 1, 4, 5]].tolist() == [0, 1, 3, 4]
    assert refine.source_index[6:9].tolist() == [5, 6, 7]  # padding follows the source's padding
    assert run(sd_model, inversion).mode == "replace"
    assert run(sd_model, inversion, "a big blue ball on the grass").mode == "refine"


def test_lcs_alignment_and_word_positions(sd_model):
    assert p2p.lcs_alignment([0, 5, 6, 7, 1], [0, 5, 9, 7, 1]) == [0, 1, None, 3, 4]
    assert p2p.lcs_alignment([0, 1], [0, 8, 8, 1]) == [0, None, None, 1]
    # "road" is not in the tiny vocabulary: it falls back to 4 character tokens
    assert p2p.word_tokens(sd_model, "a box on a road", "road") == [5, 6, 7, 8]
    assert p2p.word_tokens(sd_model, "a red ball, a red box", "red") == [2, 6]
    assert p2p.word_tokens(sd_model, "a red ball", "Ball,") == [3]
    assert p2p.word_tokens(sd_model, "a red ball", "cat") == []


# ------------------------------------------------------------------------------- the mechanism
class _Identity(AttentionControl):
    edits = True

    def __init__(self):
        self.seen = 0

    def rows(self, name, is_cross, batch, tokens):
        return list(range(batch))

    def process(self, name, probs, is_cross):
        self.seen += 1
        return probs


def test_an_identity_edit_of_every_layer_matches_the_fused_processors(sd_model):
    denoiser = sd_model.denoiser("a red ball", 3.5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    before = {n: type(m.processor) for n, m in attention_layers(sd_model.unet).items()}
    reference = denoiser(x, 500)
    control = _Identity()
    with controlled_attention(sd_model.unet, control, attention_layers(sd_model.unet)):
        explicit = denoiser(x, 500)
    assert control.seen == len(before)
    assert (explicit - reference).abs().max() < 1e-5
    assert {n: type(m.processor) for n, m in attention_layers(sd_model.unet).items()} == before
    with pytest.raises(RegionEditError, match="not attention layers"):
        with controlled_attention(sd_model.unet, control, ["conv_in"]):
            pass


# ------------------------------------------------------------------------------- the edit
def test_the_source_branch_reconstructs_the_input(sd_model, inversion):
    sampled = run(sd_model, inversion, source_branch="sampled")
    assert (sampled.source_sample - inversion.x0).abs().max() <= 1e-4
    stored = run(sd_model, inversion)
    assert stored.recipe["source_branch"] == "stored" and torch.equal(stored.source_sample, inversion.x0)
    # reading the source path from the maps is the same edit as sampling it
    assert (stored.sample - sampled.sample).abs().max() <= 1e-3
    assert (stored.sample - inversion.x0).abs().max() > 0.1  # and it is an edit


@pytest.mark.parametrize("branch", ["stored", "sampled"])
def test_identical_prompts_with_full_replacement_give_the_source(sd_model, inversion, branch):
    out = run(sd_model, inversion, SOURCE, guidance_scale=3.5, skip=0, cross_replace=1.0, self_replace=1.0,
              self_max_tokens=10**6, source_branch=branch)
    assert (out.sample - out.source_sample).abs().max() <= 5e-4
    assert (out.sample - inversion.x0).abs().max() <= 5e-4


def test_local_blending_keeps_everything_outside_the_mask(sd_model, photo):
    inv = invert(sd_model, photo, prompt=SOURCE, num_inference_steps=STEPS, seed=0, progress=False)
    # the random model's 8² maps are nearly flat: a high threshold gives a partial mask (~20 % of the cells)
    out = run(sd_model, inv, blend_words=["ball"], blend_threshold=0.98)
    mask = out.blend_mask
    assert mask.shape == (1, 1, 8, 8) and 0 < mask.mean() < 1
    outside = (mask == 0).expand_as(inv.x0)
    assert torch.equal(out.sample[outside], inv.x0[outside])  # the latents outside are the input's, exactly
    free = run(sd_model, inv)
    assert (free.sample - inv.x0).abs()[outside].max() > 0.1  # without blending they change there
    # pixels: the tiny VAE's decoder (3×3 convolutions and a mid-block attention over the whole
    # latent) spreads the inside's change everywhere; outside, blending still brings them closer
    pixels = F.interpolate((mask == 0).float(), scale_factor=8, mode="nearest").bool().expand(1, 3, -1, -1)
    source = pil_to_tensor(out.source_image)
    blended = (pil_to_tensor(out.image) - source).abs()[pixels].mean()
    unblended = (pil_to_tensor(free.image) - source).abs()[pixels].mean()
    assert blended < unblended


def test_local_blending_thresholds_a_word_map_by_its_range_not_its_peak():
    # a word's map as the toy text-to-image model draws it: a floor of 40 % of the peak everywhere
    # and one bright cell; the code's threshold 0.3 of the peak alone would select every cell
    word_map = torch.full((8, 8), 0.4)
    word_map[5, 1] = 1.0
    running = p2p.RunningMaps()
    running.add(torch.stack([word_map.flatten(), torch.zeros(64)], dim=-1).expand(2, 1, 64, 2))
    control = p2p.P2PControl(p2p.token_map([1], [1], 2), None, range(0), range(0), 0, ["layer"])
    control.running = {"layer": running}
    mask = control.blend_mask(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), (8, 8), threshold=0.3)
    expected = torch.zeros(8, 8)
    expected[4:7, 0:3] = 1  # the bright cell, grown by the 3×3 max-pooling
    assert torch.equal(mask[0, 0], expected)
    flat = p2p.RunningMaps()
    flat.add(torch.full((2, 1, 64, 2), 0.5))
    control.running = {"layer": flat}
    # a map without contrast localises nothing: the whole latent may change, as with the code's rule
    assert control.blend_mask(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), (8, 8), threshold=0.3).min() == 1


@pytest.fixture(scope="module")
def pixel_text_model(sd_model):
    """A pixel-space text-conditional UNet (the toy world's kind): decoding is the identity."""
    from diffusers import UNet2DConditionModel

    from regionedit.models import DiffusionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=sd_model.text_encoder.config.hidden_size, attention_head_dim=8, norm_num_groups=8,
        )
    return DiffusionModel(unet, sd_model.scheduler, text_encoder=sd_model.text_encoder, tokenizer=sd_model.tokenizer,
                          name="pixel-text", device="cpu")


def test_local_blending_leaves_the_pixels_outside_exactly_in_pixel_space(pixel_text_model):
    x0 = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    inv = invert(pixel_text_model, latents=x0, prompt=SOURCE, num_inference_steps=STEPS, seed=0, progress=False)
    out = run(pixel_text_model, inv, blend_words=["ball"], blend_threshold=0.9)
    mask = out.blend_mask
    assert mask.shape == (1, 1, 16, 16) and 0 < mask.mean() < 1
    outside = (mask == 0).expand(1, 3, -1, -1)
    edit, source = pil_to_tensor(out.image), pil_to_tensor(out.source_image)
    assert torch.equal(edit[outside], source[outside])
    assert (edit - source).abs()[~outside].max() > 0.05


def test_reweighting_changes_the_edit_only_when_the_weight_is_not_one(sd_model, inversion):
    plain = run(sd_model, inversion)
    assert torch.equal(run(sd_model, inversion, reweight={"blue": 1.0}).sample, plain.sample)
    assert (run(sd_model, inversion, reweight={"blue": 3.0}).sample - plain.sample).abs().max() > 1e-3
    assert (run(sd_model, inversion, reweight={"blue": 0.0}).sample - plain.sample).abs().max() > 1e-3


@pytest.mark.parametrize("options", [{}, {"source_branch": "sampled"}, {"blend_words": ["ball"]},
                                     {"cross_replace": 0.0, "self_replace": 0.0}])
def test_one_unet_call_per_step(sd_model, inversion, options):
    calls = []
    hook = sd_model.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        run(sd_model, inversion, **options)
    finally:
        hook.remove()
    assert len(calls) == STEPS - SKIP
    rows = set(calls)
    if options.get("source_branch") == "sampled":
        assert rows == {4}  # [uncond src, uncond tgt, text src, text tgt]
    elif options.get("cross_replace") == 0.0 and not options.get("blend_words"):
        assert rows == {2}  # nothing needs the source: [uncond tgt, text tgt]
    else:
        assert 3 in rows and rows <= {2, 3}  # [uncond tgt, text src, text tgt] while the source is needed


@pytest.fixture(scope="module")
def recorded(sd_model, inversion):
    return invert(sd_model, latents=inversion.x0, prompt=SOURCE, guidance_scale=3.5, num_inference_steps=STEPS, seed=0,
                  progress=False, record_attention=True)


@pytest.mark.parametrize("prompt, options", [
    ("a blue ball on the grass", {}),
    ("a blue ball on the grass", {"blend_words": ["ball"], "reweight": {"blue": 2.0}}),
    ("a big blue ball on the grass", {"cross_replace": 1.0, "self_replace": 1.0}),  # refine, every step
])
def test_the_inversions_recorded_attention_gives_the_same_edit_from_two_rows(sd_model, inversion, recorded, prompt, options):
    assert torch.equal(recorded.xts, inversion.xts) and torch.equal(recorded.zs, inversion.zs)  # observing changes nothing
    assert recorded.source_attention.steps == STEPS and inversion.source_attention is None
    computed = run(sd_model, inversion, prompt, **options)
    calls = []
    hook = sd_model.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        reused = run(sd_model, recorded, prompt, **options)
    finally:
        hook.remove()
    assert calls == [2] * (STEPS - SKIP)  # the plain edit's rows: [uncond tgt, text tgt]
    assert (computed.recipe["source_attention"], reused.recipe["source_attention"]) == ("computed", "inversion")
    # Only float rounding differs (the maps come from batches of other sizes); a map of the wrong
    # step or layer moves the sample by ~1e-1 (checked below).
    assert (reused.sample - computed.sample).abs().max() < 1e-4
    if options.get("blend_words"):
        assert torch.equal(reused.blend_mask, computed.blend_mask)


def test_recorded_maps_belong_to_their_step(sd_model, inversion, recorded):
    maps = recorded.source_attention.maps
    shifted = dict(maps)
    for (step, name), probs in maps.items():  # every step given the next step's maps
        shifted[(step, name)] = maps.get((step + 1, name), probs)
    wrong = type(recorded.source_attention)(shifted, recorded.source_attention.self_max_tokens, STEPS)
    from dataclasses import replace

    right = run(sd_model, recorded, cross_replace=1.0, self_replace=1.0)
    off = run(sd_model, replace(recorded, source_attention=wrong), cross_replace=1.0, self_replace=1.0)
    assert (right.sample - off.sample).abs().max() > 1e-2


def test_sequential_and_batched_inversions_record_the_same_maps(sd_model, inversion, recorded):
    sequential = invert(sd_model, latents=inversion.x0, prompt=SOURCE, guidance_scale=3.5, num_inference_steps=STEPS,
                        seed=0, progress=False, record_attention=True, batched=False)
    a, b = recorded.source_attention.maps, sequential.source_attention.maps
    assert a.keys() == b.keys() and len(a) > 0
    assert {step for step, _ in a} == set(range(STEPS))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_recordings_over_budget_or_of_a_changed_path_are_dropped(sd_model, inversion, recorded, monkeypatch):
    from regionedit.core import attention

    assert ddpm_edit.shift(recorded, 1, 0).source_attention is None
    assert ddpm_edit.tint(recorded, [0.1, 0, 0, 0]).source_attention is None
    assert ddpm_edit.redraw(sd_model, recorded, 5).source_attention is not None
    monkeypatch.setattr(attention, "SOURCE_ATTENTION_BUDGET_MB", recorded.source_attention.megabytes / 2)
    over = invert(sd_model, latents=inversion.x0, prompt=SOURCE, guidance_scale=3.5, num_inference_steps=STEPS, seed=0,
                  progress=False, record_attention=True)
    assert over.source_attention is None and torch.equal(over.zs, inversion.zs)
    assert run(sd_model, over).recipe["source_attention"] == "computed"
    with pytest.raises(RegionEditError, match="give a prompt"):
        invert(sd_model, latents=inversion.x0, num_inference_steps=STEPS, record_attention=True, progress=False)


def test_the_cross_window_is_counted_from_the_first_edited_step(sd_model, inversion):
    assert p2p.step_window(0.6, 100, "x") == range(0, 60)
    assert p2p.step_window((0.2, 0.5), 10, "x") == range(2, 5)
    calls = []
    hook = sd_model.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        run(sd_model, inversion, cross_replace=0.3, self_replace=0.1)  # 3 of 10 steps, counted from skip
    finally:
        hook.remove()
    assert calls == [3, 3, 3] + [2] * (STEPS - SKIP - 3)


def test_p2p_on_a_ddim_inversion(sd_model, inversion):
    ddim = ddim_invert(sd_model, latents=inversion.x0, prompt=SOURCE, num_inference_steps=STEPS, progress=False)
    assert not ddim.is_exact and torch.equal(ddim.zs, torch.zeros_like(ddim.zs))
    out = p2p.edit(sd_model, ddim, "a blue ball on the grass", progress=False)
    assert out.recipe["inversion"] == "ddim" and out.recipe["source_branch"] == "sampled"
    assert out.recipe["skip"] == 0 and out.recipe["cross_replace"] == 0.8 and out.recipe["self_replace"] == 0.4
    # DDIM sampling from the DDIM-inverted x_T is the usual approximate reconstruction
    reconstruction = sample_from_noise_maps(sd_model.denoiser(SOURCE, 3.5), ddim)
    assert torch.allclose(out.source_sample, reconstruction, atol=1e-4)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"blend_words": ["cat"]}, "blend word 'cat' is in neither prompt"),
        ({"reweight": {"blue": float("nan")}}, "must be a finite number"),
        ({"reweight": {"red": 2.0}}, "re-weighted word 'red' is not in the target prompt"),
        ({"cross_replace": 1.5}, "cross_replace must be a fraction"),
        ({"self_replace": (0.5, 0.2)}, "self_replace must be a fraction"),
        ({"skip": STEPS}, "skip must be in"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"blend_words": ["ball"], "blend_threshold": 1.0}, "blend_threshold must be in"),
        ({"source_branch": "cached"}, "source_branch must be one of"),
    ],
)
def test_bad_inputs_are_clear_errors(sd_model, inversion, options, message):
    with pytest.raises(RegionEditError, match=message):
        run(sd_model, inversion, **options)


def test_models_and_inversions_p2p_cannot_use(sd_model, pixel_model, inversion):
    pixel_inversion = invert(pixel_model, latents=torch.zeros(1, 3, 32, 32), num_inference_steps=4, seed=0,
                             progress=False)
    with pytest.raises(RegionEditError, match="needs a text-to-image model"):
        p2p.edit(pixel_model, pixel_inversion, "a cat", progress=False)
    ddim = ddim_invert(sd_model, latents=inversion.x0, prompt=SOURCE, num_inference_steps=4, progress=False)
    with pytest.raises(RegionEditError, match="needs an edit-friendly inversion"):
        p2p.edit(sd_model, ddim, "a cat", source_branch="stored", progress=False)
    with pytest.raises(RegionEditError, match="DDIM inversion has no draw"):
        ddpm_edit.redraw(sd_model, ddim, 1)


# ------------------------------------------------------------------------------- diversity
def test_redrawn_noise_maps_give_different_valid_edits(sd_model, inversion):
    draws = ddpm_edit.redraws(sd_model, inversion, 3)
    assert [d.seed for d in draws] == [0, 1, 2]
    for draw in draws[1:]:  # each draw is a valid edit-friendly inversion of the same image
        assert torch.equal(draw.x0, inversion.x0) and not torch.equal(draw.zs, inversion.zs)
        reconstruction = sample_from_noise_maps(sd_model.denoiser(SOURCE, 3.5), draw)
        assert (reconstruction - inversion.x0).abs().max() <= 2e-3
    edits = ddpm_edit.edit_samples(sd_model, inversion, "a blue ball", skip=SKIP, num_samples=3, progress=False)
    assert len(edits) == 3 and [e.recipe["seed"] for e in edits] == [0, 1, 2]
    samples = [e.sample for e in edits]
    assert all((a - b).abs().max() > 1e-2 for i, a in enumerate(samples) for b in samples[i + 1:])
    assert torch.equal(edits[0].sample, ddpm_edit.edit(sd_model, inversion, "a blue ball", skip=SKIP, progress=False).sample)
    with pytest.raises(RegionEditError, match="num_samples must be"):
        ddpm_edit.redraws(sd_model, inversion, 0)


def test_diversity_measure():
    a = torch.zeros(1, 3, 4, 4)
    b = a.clone()
    b[..., :2, :] = 0.5  # differs only in the top half
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    result = diversity([a, b, a], mask)
    assert result["pairs"] == 3 and result["l1_inside"] == pytest.approx(1 / 3, abs=1e-4) and result["l1_outside"] == 0
    assert result["inside_over_outside"] is None


# ------------------------------------------------------------------------------- CLI and bench
@pytest.fixture
def image_file(tmp_path, photo):
    path = tmp_path / "photo.png"
    photo.save(path)
    return path


SD = ["--model", "tiny/sd", "--steps", "6", "--skip", "1", "-q", "--source-prompt", "a red ball"]


def test_cli_num_samples_writes_numbered_edits(capsys, image_file, tmp_path):
    out = tmp_path / "out.png"
    code = main(["edit", "ddpm", str(image_file), "-o", str(out), "--target-prompt", "a blue ball", "--num-samples", "3",
                 *SD])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    paths = [tmp_path / f"out-{k}.png" for k in range(3)]
    assert not out.exists() and all(p.exists() for p in paths)
    assert [read_recipe(p)["seed"] for p in paths] == [0, 1, 2]
    images = [pil_to_tensor(Image.open(p)) for p in paths]
    assert all(im.shape == (1, 3, 64, 64) for im in images)
    assert all(not torch.equal(a, b) for i, a in enumerate(images) for b in images[i + 1:])


def test_cli_p2p_flags(capsys, image_file, tmp_path):
    out = tmp_path / "p2p.png"
    code = main(["edit", "ddpm", str(image_file), "-o", str(out), "--target-prompt", "a big blue ball", "--p2p",
                 "--cross-replace", "0.5", "--self-replace", "0.3", "--blend-words", "ball", "--reweight", "blue=2", *SD])
    assert code == 0, capsys.readouterr().err
    recipe = read_recipe(out)
    assert recipe["method"] == "p2p" and recipe["mode"] == "refine" and recipe["reweight"] == {"blue": 2.0}
    assert recipe["cross_replace"] == 0.5 and recipe["blend_words"] == ["ball"] and recipe["target_guidance_scale"] == 9.0
    assert recipe["source_attention"] == "inversion"  # the CLI's inversion kept the source's maps for P2P
    code = main(["edit", "ddpm", str(image_file), "-o", str(tmp_path / "ddim.png"), "--target-prompt", "a blue ball",
                 "--p2p", "--inversion-type", "ddim", *SD])
    assert code == 0 and read_recipe(tmp_path / "ddim.png")["inversion"] == "ddim"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--reweight", "blue=2"], "--reweight: only with --p2p"),
        (["--p2p", "--reweight", "blue"], "--reweight must be WORD=SCALE"),
        (["--p2p", "--reweight", "blue=nan"], "must be a finite number"),
        (["--p2p", "--blend-words", "cat"], "blend word 'cat' is in neither prompt"),
        (["--num-samples", "0"], "--num-samples must be ≥ 1"),
        (["--inversion-type", "ddim"], "add --p2p"),
    ],
)
def test_cli_bad_p2p_input_is_one_line(capsys, image_file, tmp_path, extra, message):
    code = main(["edit", "ddpm", str(image_file), "-o", str(tmp_path / "o.png"), "--target-prompt", "a blue ball",
                 *SD, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bench_p2p_tiny(capsys, tmp_path):
    path = tmp_path / "p2p.json"
    code = main(["bench", "p2p", "--tiny", "--device", "cpu", "--steps", "4", "--skip", "1", "--repeats", "1",
                 "--samples", "2", "--json", str(path)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(path.read_text())
    assert set(result["unet_calls"].values()) == {3} and len(result["unet_calls"]) == 7
    assert result["p2p_blend_mask_over_plain"] > 0
    assert result["p2p_over_plain"] > 0 and result["source_recon_max_abs_err_sampled"] < 1e-3
    assert result["recorded_attention_mb"] > 0 and result["p2p_recorded_vs_computed_max_abs_diff"] < 1e-3
    assert set(result["diversity"]) >= {"plain", "p2p_blend"}
