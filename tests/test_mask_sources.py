"""Any mask with any method: every mask source (file, box, face part, brush, text, ZONE's attention,
segment pick) feeds RDM, RBE, JICA, Prompt-to-Prompt's local blending and ZONE, and each method uses
exactly the resolved mask; pairs that cannot work fail with one line naming the source and the method."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from regionedit.cli import main
from regionedit.core.inversion import invert
from regionedit.errors import RegionEditError
from regionedit.images import pil_to_tensor, read_recipe, save_png, tensor_to_pil
from regionedit.mask_sources import (
    AttentionMask,
    BoxMask,
    BrushMask,
    FacePartMask,
    FileMask,
    SegmentPick,
    TensorMask,
    TextMask,
    parse_mask_spec,
    resolve_source,
)
from regionedit.methods import jica, p2p, rbe, rdm, zone
from regionedit.methods.hspace_edit import start_from_image
from regionedit.segment import load_segmenter
from regionedit.toyworld.scenes import generate_edits

SOURCES = ["file", "box", "face", "brush", "text", "attention", "segment"]
INSTRUCTION = "make the star red"
POINT = (32, 40)  # on the scene's star


@pytest.fixture(scope="module")
def scene():
    return generate_edits([5], actions=["change_colour"]).source.images  # 1×3×64×64 in [0, 1]


@pytest.fixture(scope="module")
def segmenter():
    return load_segmenter("tiny/clipseg", "cpu")


@pytest.fixture(scope="module")
def text_threshold(scene, segmenter):
    """The median score of the random tiny segmenter: about half the pixels are 'the star'."""
    return float(segmenter.scores(scene, "the star").median())


@pytest.fixture(scope="module")
def sources(scene, segmenter, text_threshold, ip2p_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("masks")
    drawn = torch.zeros(1, 1, 64, 64)
    drawn[..., 10:30, 20:50] = 1
    save_png(tensor_to_pil(drawn[0].expand(3, -1, -1) * 2 - 1), folder / "mask.png")
    layer = np.zeros((64, 64, 4), np.uint8)
    layer[40:60, 5:25] = (255, 0, 255, 255)
    return {
        "file": FileMask(str(folder / "mask.png")),
        "box": BoxMask((8, 8, 40, 40)),
        "face": FacePartMask("eyes"),
        "brush": BrushMask(Image.fromarray(layer, "RGBA")),
        "text": TextMask("the star", segmenter, text_threshold),
        "attention": AttentionMask(INSTRUCTION, ip2p_model, num_inference_steps=1),
        "segment": SegmentPick(point=POINT),
    }


@pytest.fixture(scope="module")
def expected(sources, scene):
    return {name: resolve_source(source, scene).mask for name, source in sources.items()}


def test_sources_resolve_to_binary_masks_at_the_image_size(expected):
    for name, mask in expected.items():
        assert mask.shape == (1, 1, 64, 64), name
        assert set(mask.unique().tolist()) == {0.0, 1.0}, name  # neither empty nor everything
    assert expected["box"][0, 0, 8:40, 8:40].all() and expected["box"].sum() == 32 * 32
    assert expected["brush"].sum() == 20 * 20 and expected["file"].sum() == 20 * 30


def test_specs_parse_in_one_place(tmp_path):
    assert parse_mask_spec("face:eyes") == FacePartMask("eyes")
    assert parse_mask_spec("1,2,30,40") == BoxMask((1.0, 2.0, 30.0, 40.0)) == parse_mask_spec("box:1,2,30,40")
    assert parse_mask_spec("text: the ball ").text == "the ball"
    assert parse_mask_spec("attention:make the ball red").instruction == "make the ball red"
    assert parse_mask_spec("segment:3,4").point == (3.0, 4.0) and parse_mask_spec("segment:#2").index == 2
    assert parse_mask_spec(str(tmp_path / "m.png")) == FileMask(str(tmp_path / "m.png"))
    for bad, message in (("segment:1,2,3", "segment:x,y"), ("text:", "words"), ("attention: ", "instruction"),
                         ("segment:#x", "integer"), ("", "empty")):
        with pytest.raises(RegionEditError, match=message):
            parse_mask_spec(bad)
    with pytest.raises(RegionEditError, match="mask not found"):
        resolve_source(str(tmp_path / "missing.png"), torch.zeros(1, 3, 8, 8))


# ------------------------------------------------------------------------------- supported pairs
def unit(image) -> torch.Tensor:
    return (pil_to_tensor(image) + 1) / 2


def assert_unchanged_outside(result: torch.Tensor, original: torch.Tensor, mask: torch.Tensor, strict: bool = True) -> None:
    outside = mask.expand_as(result) == 0
    assert outside.any() or not strict
    assert torch.equal((result * 255).round()[outside], (original * 255).round()[outside])


@pytest.mark.parametrize("name", SOURCES)
def test_rdm_with_every_source(name, sources, expected, scene, sd_model):
    out = rdm.edit(sd_model, scene, "a red star", mask=sources[name], clip=None, clip_guidance_scale=0, nerp_mse=0,
                   nerp_lpips=0, num_inference_steps=2, progress=False)
    assert torch.equal(out.mask, expected[name])
    assert_unchanged_outside(unit(out.image), scene, expected[name])
    assert out.recipe["mask_source"].startswith(sources[name].describe())
    assert (out.scores is not None) == (name == "text")


@pytest.fixture(scope="module")
def start(pixel_model, scene):
    return start_from_image(pixel_model, scene, timestep=500, num_inference_steps=10, max_side=32)


@pytest.fixture
def seen_masks(monkeypatch):
    """The masks RBE / JICA hand to their Jacobians (before the resize to the sample)."""
    seen = []

    def spy(model, start, mask):
        seen.append(mask)
        return original(model, start, mask)

    original = rbe.sample_mask
    monkeypatch.setattr(rbe, "sample_mask", spy)
    monkeypatch.setattr(jica, "sample_mask", spy)
    return seen


@pytest.mark.parametrize("name", SOURCES)
def test_rbe_with_every_source(name, sources, expected, scene, pixel_model, start, seen_masks):
    found = rbe.discover(pixel_model, start, sources[name], k=1, complement_rank=1, max_iterations=1, image=scene)
    assert len(seen_masks) == 1 and torch.equal(seen_masks[0], expected[name])
    assert found.regions[0].startswith(sources[name].describe())


@pytest.mark.parametrize("name", SOURCES)
def test_jica_with_every_source(name, sources, expected, scene, pixel_model, start, seen_masks):
    other = BoxMask((0, 48, 64, 64))
    found = jica.discover(pixel_model, start, [sources[name], other], svd_rank=2, joint_rank=1, individual_rank=1,
                          max_iterations=1, image=scene)
    assert torch.equal(seen_masks[0], expected[name]) and torch.equal(seen_masks[1], resolve_source(other, scene).mask)
    assert found.regions == [found.regions[0], "0,48,64,64"] and found.regions[0].startswith(sources[name].describe())


@pytest.fixture(scope="module")
def inversion(sd_model, scene):
    return invert(sd_model, scene, prompt="a star", guidance_scale=3.5, num_inference_steps=4, seed=0, progress=False)


@pytest.mark.parametrize("name", SOURCES)
def test_p2p_local_blending_with_every_source(name, sources, expected, scene, sd_model, inversion):
    out = p2p.edit(sd_model, inversion, "a red star", skip=1, blend_mask=sources[name], image=scene, progress=False)
    alpha = (F.adaptive_max_pool2d(expected[name], out.sample.shape[-2:]) > 0).float()
    assert torch.equal(out.blend_mask.cpu(), alpha) and alpha.any()  # (the tiny segmenter's text mask covers every latent pixel)
    outside = alpha.expand_as(out.sample) == 0
    assert torch.equal(out.sample[outside], out.source_sample[outside])  # the input's latents, exactly
    assert out.recipe["blend_mask"].startswith(sources[name].describe())


@pytest.mark.parametrize("name", SOURCES)
def test_zone_with_every_source(name, sources, expected, scene, ip2p_model):
    out = zone.edit(ip2p_model, scene, INSTRUCTION, mask=sources[name], num_inference_steps=1, progress=False)
    assert torch.equal(out.coarse_mask, expected[name])  # the user region replaces the attention mask
    # (the random tiny models' text and attention masks are scattered: ZONE's refinement may grow
    # them over the whole image)
    assert_unchanged_outside(unit(out.image), scene, out.final_mask, strict=name not in ("text", "attention"))
    assert out.recipe["mask_source"].startswith(sources[name].describe())
    assert any("instead of the attention maps" in note for note in out.recipe["notes"])


def test_the_ddpm_editor_blends_by_a_tensor_mask_as_by_any_source(scene, sd_model, inversion):
    from regionedit.editors import DDPMEditor

    editor = DDPMEditor(sd_model)
    editor.set_progress_bar_config(disable=True)
    box = torch.zeros(1, 1, *scene.shape[-2:])
    box[..., 8:40, 8:40] = 1
    by_tensor = editor.edit(inversion, prompt="a red star", skip=1, p2p=True, blend_mask=box)
    by_box = editor.edit(inversion, prompt="a red star", skip=1, p2p=True, blend_mask=BoxMask((8, 8, 40, 40)))
    assert torch.equal(by_tensor.masks["blend"], by_box.masks["blend"]) and torch.equal(by_tensor.pixels, by_box.pixels)
    with pytest.raises(RegionEditError, match="blend_mask: only with p2p=True"):
        editor.edit(inversion, prompt="a red star", blend_mask=box)


def test_tensors_still_pass_through_untouched(scene):
    soft = torch.full((1, 1, 32, 32), 0.25)
    assert resolve_source(soft, scene).mask is soft
    assert torch.equal(resolve_source(TensorMask(soft), None).mask, soft)


# ------------------------------------------------------------------------------- unsupported pairs
def test_attention_mask_needs_an_instruct_model(scene, sd_model, pixel_model, start, inversion):
    source = AttentionMask(INSTRUCTION)
    with pytest.raises(RegionEditError, match=r"attention:make the star red.*instruct model.*RDM.*tiny/sd"):
        rdm.edit(sd_model, scene, "a red star", mask=source, num_inference_steps=1, progress=False)
    with pytest.raises(RegionEditError, match=r"attention:.*instruct model.*RBE.*tiny/pixel-ddpm"):
        rbe.discover(pixel_model, start, source, k=1, complement_rank=1, image=scene)
    with pytest.raises(RegionEditError, match=r"attention:.*instruct model.*Prompt-to-Prompt"):
        p2p.edit(sd_model, inversion, "a red star", skip=1, blend_mask=source, image=scene, progress=False)


def test_text_mask_needs_a_segmenter(scene, ip2p_model):
    with pytest.raises(RegionEditError, match=r"text:the star.*segmenter.*ZONE"):
        zone.edit(ip2p_model, scene, INSTRUCTION, mask=TextMask("the star"), num_inference_steps=1, progress=False)


@pytest.mark.parametrize("name", ["text", "attention", "segment"])
def test_pixel_sources_need_the_image(name, sources, pixel_model, start):
    with pytest.raises(RegionEditError, match=f"{name}:.*needs the image for RBE"):
        rbe.discover(pixel_model, start, sources[name], k=1, complement_rank=1)


def test_p2p_blends_by_words_or_by_a_mask(sd_model, inversion):
    with pytest.raises(RegionEditError, match="blend words or a blend mask, not both"):
        p2p.edit(sd_model, inversion, "a red star", skip=1, blend_words=["star"], blend_mask=BoxMask((0, 0, 8, 8)),
                 progress=False)


# ------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def image_file(scene, tmp_path_factory):
    return save_png(tensor_to_pil(scene[0] * 2 - 1), tmp_path_factory.mktemp("cli") / "scene.png")


def read_mask(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("L")) > 127).float()[None, None]


def test_cli_rdm_text_mask_and_zone_segment_pick(image_file, expected, text_threshold, tmp_path, capsys):
    out, mask_out = tmp_path / "rdm.png", tmp_path / "rdm-mask.png"
    code = main(["edit", "rdm", str(image_file), "-o", str(out), "--target", "a red star", "--mask", "text:the star", "--threshold",
                 str(text_threshold), "--model", "tiny/sd", "--clip", "none", "--nerp-mse", "0", "--nerp-lpips", "0",
                 "--steps", "1", "--mask-out", str(mask_out), "-q"])
    assert code == 0, capsys.readouterr().err
    assert torch.equal(read_mask(mask_out), expected["text"])
    assert read_recipe(out)["mask_source"].startswith("text:the star (tiny/clipseg")
    code = main(["edit", "zone", str(image_file), INSTRUCTION, "-o", str(tmp_path / "zone.png"), "--mask",
                 f"segment:{POINT[0]},{POINT[1]}", "--model", "tiny/ip2p", "--single", "--steps", "1", "-q"])
    assert code == 0, capsys.readouterr().err
    assert read_recipe(tmp_path / "zone.png")["mask_source"].startswith("segment:32,40 (classical")


def test_cli_p2p_blend_mask(image_file, tmp_path, capsys):
    out = tmp_path / "p2p.png"
    code = main(["edit", "ddpm", str(image_file), "-o", str(out), "--target-prompt", "a red star", "--p2p",
                 "--blend-mask", "8,8,40,40", "--model", "tiny/sd", "--steps", "4", "--skip", "1", "-q",
                 "--source-prompt", "a star"])
    assert code == 0, capsys.readouterr().err
    assert read_recipe(out)["blend_mask"] == "8,8,40,40"
    code = main(["edit", "ddpm", str(image_file), "-o", str(tmp_path / "x.png"), "--target-prompt", "a red star",
                 "--blend-mask", "8,8,40,40", "--model", "tiny/sd", "--source-prompt", "a star", "-q"])
    assert code == 2 and "--blend-mask: only with --p2p" in capsys.readouterr().err


def test_cli_attention_mask_on_a_model_without_an_instruct_partner(image_file, tmp_path, capsys):
    code = main(["discover", "rbe", str(image_file), "--mask", f"attention:{INSTRUCTION}", "-o",
                 str(tmp_path / "d.safetensors"), "--model", "tiny/pixel-ddpm", "--steps", "10", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "attention mask needs an instruct model" in err and "RBE" in err and "tiny/pixel-ddpm" in err


# ------------------------------------------------------------------------------ the web app's brush
def _layer(box: tuple[int, int, int, int]) -> Image.Image:
    """An RGBA brush layer of 64² with one opaque rectangle (x0, y0, x1, y1), as Gradio sends it."""
    array = np.zeros((64, 64, 4), np.uint8)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = (255, 0, 255, 255)
    return Image.fromarray(array, "RGBA")


def test_the_app_brush_is_a_mask_source_for_every_tab(scene, tmp_path):
    from regionedit.app import Workspace, image_and_mask, run_rdm, run_zone

    photo = tensor_to_pil(scene[0] * 2 - 1)
    value = {"background": photo, "layers": [_layer((20, 10, 50, 30)), None, _layer((5, 40, 25, 60))]}
    image, brush = image_and_mask(value)
    assert isinstance(brush, BrushMask)
    union = torch.zeros(1, 1, 64, 64)
    union[..., 10:30, 20:50] = union[..., 40:60, 5:25] = 1
    assert torch.equal(resolve_source(brush, scene).mask, union)  # both layers, to the pixel
    assert image_and_mask({"background": photo, "layers": [Image.new("RGBA", (64, 64))]})[1] is None  # nothing drawn

    ws = Workspace(tmp_path)
    edited, region, _, _ = run_rdm(ws, value, "", "a red star", "", "tiny/sd", 128, 2, 0)
    assert torch.equal(pil_to_tensor(region)[:, :1] > 0, union > 0)  # RDM edits exactly the brush region
    outside = union.expand(1, 3, -1, -1)[0] == 0
    assert torch.equal(pil_to_tensor(edited)[0][outside], pil_to_tensor(photo)[0][outside])
    zone_out = run_zone(ws, value, INSTRUCTION, "tiny/ip2p", 2, True, [])
    assert read_recipe(zone_out[2][0])["mask_source"] == "brush"  # the strokes replaced ZONE's attention


def test_the_app_refuses_server_paths_as_regions(tmp_path):
    from regionedit.app import box_source, region_source

    (tmp_path / "secret.png").write_bytes(b"x")
    with pytest.raises(RegionEditError, match="give face:<part>"):
        region_source(str(tmp_path / "secret.png"))
    assert isinstance(region_source("face:eyes"), FacePartMask) and isinstance(box_source(" 1,2,30,40 "), BoxMask)
    assert box_source("  ") is None
    with pytest.raises(RegionEditError, match="box:x0,y0,x1,y1"):
        box_source("1,2,3")
