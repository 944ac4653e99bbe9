"""The editors (regionedit.editors): the README's Python snippets run as written; an editor gives what
the method functions give with the same settings; seeds reproduce; directions and inversions stay
with their model and size; RDM never drops CLIP guidance silently."""

import re
from pathlib import Path

import pytest
import torch

from regionedit.editors import (
    DDPMEditor,
    EditorOutput,
    JICAEditor,
    RBEEditor,
    RDMEditor,
    ZoneEditor,
)
from regionedit.errors import RegionEditError
from regionedit.images import save_png, unit_to_pil
from regionedit.toyworld.faces import generate_faces
from regionedit.toyworld.scenes import generate_edits

README = Path(__file__).resolve().parent.parent / "README.md"
# Toy scene models not shipped yet → the tiny random models of the same architectures stand in.
STAND_INS = {"toy/scenes-t2i": "tiny/sd", "toy/scenes-instruct": "tiny/ip2p",
             "toy/scenes-instruct-remove": "tiny/ip2p-b", "toy/scenes-clipseg": "tiny/clipseg"}


def readme_snippets() -> list[str]:
    """The ```python blocks of the README's "Python" section, in order (the first: the imports)."""
    section = README.read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def toy_scene_models(monkeypatch):
    """``toy/scenes-*`` names resolve to tiny random models where this installation does not ship them."""
    from regionedit.models import loading

    shipped = loading.embedded_models

    def embedded() -> dict[str, Path]:
        found = shipped()
        missing = {name: tiny for name, tiny in STAND_INS.items() if name not in found}
        if "toy/scenes-instruct" in found:  # a tiny partner would not fit a real instruct model: ZONE runs it alone
            missing.pop("toy/scenes-instruct-remove", None)
        return {**{name: loading.tiny_model_path(tiny) for name, tiny in missing.items()}, **found}

    monkeypatch.setattr(loading, "embedded_models", embedded)


@pytest.fixture(scope="module")
def face():
    return unit_to_pil(generate_faces([11]).images[0])


@pytest.fixture(scope="module")
def scene():
    return unit_to_pil(generate_edits([5], actions=["change_colour"]).source.images[0])


def test_readme_has_one_snippet_per_method_of_at_most_five_lines():
    snippets = readme_snippets()
    assert len(snippets) == 7  # imports, DDPM pixel, DDPM text, RBE, JICA, RDM, ZONE
    assert all(len(s.strip().splitlines()) <= 5 for s in snippets[1:]), [len(s.splitlines()) for s in snippets]
    for name in ("DDPMEditor", "RBEEditor", "JICAEditor", "RDMEditor", "ZoneEditor"):
        assert any(f"{name}.from_pretrained" in s for s in snippets)


@pytest.mark.timeout(1800)  # seconds alone, but many minutes on 2 cores shared with training jobs
@pytest.mark.parametrize("index", range(1, 7), ids=["ddpm-pixel", "ddpm-text", "rbe", "jica", "rdm", "zone"])
def test_readme_snippet_runs(index, toy_scene_models, face, scene, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    face.save("face.png")
    scene.save("scene.png")
    before = set(tmp_path.iterdir())
    snippets = readme_snippets()
    namespace: dict = {}
    for number in (0, index):
        exec(compile(snippets[number], f"README.md Python snippet {number}", "exec"), namespace)  # noqa: S102
    written = set(tmp_path.iterdir()) - before
    assert written and all(p.stat().st_size > 0 for p in written)


# ------------------------------------------------------------------------------ same as the methods
@pytest.fixture(scope="module")
def zone_editor():
    editor = ZoneEditor.from_pretrained("tiny/ip2p", device="cpu")
    editor.set_progress_bar_config(disable=True)
    return editor


def same(a: EditorOutput, b: EditorOutput) -> bool:
    return torch.equal(a.pixels, b.pixels) and a.image.tobytes() == b.image.tobytes() and a.recipe == b.recipe


def test_zone_editor_is_zone_edit_with_its_partner(zone_editor, scene):
    from regionedit.methods import zone

    assert zone_editor.second_model.name == "tiny/ip2p-b"  # the family's partner, chosen by from_pretrained
    out = zone_editor(scene, "paint the star white", num_inference_steps=3, generator=4)
    direct = zone.edit(zone_editor.model, scene, "paint the star white", second_model=zone_editor.second_model,
                       num_inference_steps=3, seed=4, max_side=64, progress=False)
    assert torch.equal(out.pixels, direct.pixels) and out.recipe == direct.recipe
    assert out.image.tobytes() == direct.image.tobytes() and torch.equal(out.masks["final"], direct.final_mask)
    assert out.images["layer"].mode == "RGBA" and set(out.masks) == {"coarse", "refined", "final"}


def test_same_seed_same_result_and_generators_give_seeds(zone_editor, scene):
    run = lambda generator: zone_editor(scene, "paint the star white", num_inference_steps=2, generator=generator)  # noqa: E731
    first = run(torch.Generator().manual_seed(1))
    assert same(first, run(torch.Generator().manual_seed(1)))
    assert same(first, run(first.recipe["seed"]))  # the recipe's seed repeats the edit
    assert not torch.equal(first.pixels, run(first.recipe["seed"] + 1).pixels)
    generator = torch.Generator().manual_seed(1)
    assert run(generator).recipe["seed"] != run(generator).recipe["seed"]  # one generator: a new draw per call


def test_ddpm_editor_is_invert_then_edit(scene):
    from regionedit.core.inversion import invert
    from regionedit.methods import ddpm_edit

    editor = DDPMEditor.from_pretrained("tiny/sd", device="cpu")
    editor.set_progress_bar_config(disable=True)
    out = editor(scene, source_prompt="a scene", prompt="a red scene", num_inference_steps=8, skip=2, generator=3)
    inversion = invert(editor.model, scene, prompt="a scene", num_inference_steps=8, seed=3, progress=False)
    direct = ddpm_edit.edit(editor.model, inversion, "a red scene", skip=2, progress=False)
    assert torch.equal(out.pixels, direct.pixels) and out.recipe == direct.recipe
    assert out.recipe["target_guidance_scale"] == ddpm_edit.DEFAULT_TARGET_GUIDANCE
    again = editor(scene, source_prompt="a scene", prompt="a red scene", num_inference_steps=8, skip=2, generator=3)
    assert same(out, again)
    p2p = editor.edit(inversion, prompt="a red scene", skip=2, p2p=True, blend_words=["red"])
    assert p2p.recipe["method"] == "p2p" and p2p.recipe["target_guidance_scale"] == 9.0 and "blend" in p2p.masks
    assert p2p.recipe["source_attention"] == "computed"  # this inversion kept no attention
    called = editor(scene, source_prompt="a scene", prompt="a red scene", num_inference_steps=8, skip=2, generator=3,
                    p2p=True, blend_words=["red"])
    assert called.recipe["source_attention"] == "inversion"  # the editor's own inversion keeps it for P2P
    assert (called.details.sample - p2p.details.sample).abs().max() < 1e-4  # the same edit, to float rounding
    with pytest.raises(RegionEditError, match="only with p2p=True"):
        editor.edit(inversion, prompt="a red scene", blend_words=["red"])
    other = DDPMEditor.from_pretrained("tiny/pixel-ddpm", device="cpu")
    with pytest.raises(RegionEditError, match="made with model 'tiny/sd'"):
        other.edit(inversion, prompt="a red scene")


def test_rdm_editor_is_rdm_edit_with_its_companions(scene):
    from regionedit.methods import rdm
    from regionedit.segment import load_clip

    editor = RDMEditor.from_pretrained("tiny/sd", device="cpu")
    editor.set_progress_bar_config(disable=True)
    out = editor(scene, "a white star", mask="4,38,26,60", num_inference_steps=3, cutouts=2, generator=2)
    assert out.recipe["clip_model"] == "tiny/clip" and out.recipe["clip_guidance_scale"] == rdm.DEFAULT_CLIP_SCALE
    direct = rdm.edit(editor.model, scene, "a white star", mask="4,38,26,60", clip=load_clip("tiny/clip", "cpu"),
                      num_inference_steps=3, cutouts=2, seed=2, max_side=64, progress=False)
    assert torch.equal(out.pixels, direct.pixels) and out.recipe == direct.recipe
    assert torch.equal(out.masks["edit"], direct.mask)


def test_rdm_without_clip_refuses_clip_guidance_in_one_line(scene):
    editor = RDMEditor.from_pretrained("tiny/sd", device="cpu", clip=None)
    editor.set_progress_bar_config(disable=True)
    with pytest.raises(RegionEditError) as caught:
        editor(scene, "a white star", mask="4,38,26,60", num_inference_steps=2)
    assert "clip_guidance_scale is 150" in str(caught.value) and "\n" not in str(caught.value)
    out = editor(scene, "a white star", mask="4,38,26,60", num_inference_steps=2, clip_guidance_scale=0)
    assert out.recipe["clip_model"] is None and out.recipe["clip_guidance_scale"] == 0


def test_native_resolution_by_default(scene):
    editor = RDMEditor.from_pretrained("tiny/sd", device="cpu", clip=None)
    editor.set_progress_bar_config(disable=True)
    large = scene.resize((128, 128))
    options = dict(mask="8,76,52,120", num_inference_steps=2, clip_guidance_scale=0)
    assert editor(large, "a white star", **options).image.size == (64, 64)  # the model's native size
    assert editor(large, "a white star", max_side=128, **options).image.size == (128, 128)


# ------------------------------------------------------------------------------ directions
@pytest.fixture(scope="module")
def found(face):
    editor = RBEEditor.from_pretrained("tiny/pixel-ddpm", device="cpu")
    return editor, editor.discover(face, "face:eyes", k=2, complement_rank=2, max_iterations=2)


def test_rbe_editor_applies_as_the_method_functions(found, face):
    from regionedit.methods.hspace_edit import sample_with_direction, start_from_image, to_pixels

    editor, directions = found
    out = editor.apply(face, directions, index=1, strength=-30.0)
    start = start_from_image(editor.model, face, max_side=editor.model.native_resolution)
    direct = to_pixels(editor.model, start, sample_with_direction(editor.model, start, directions.vector(1), -30.0))
    assert torch.equal(out.pixels, direct) and out.image.size == (32, 32)  # tiny/pixel-ddpm is 32² natively
    assert out.recipe["label"] == directions.labels[1] and out.recipe["strength"] == -30.0
    strip = editor.strip(face, directions, index=1, strengths=(-30.0, 0.0))
    assert strip.image.size == (64, 32) and torch.equal(strip.pixels[..., :32], direct)
    assert strip.recipe["strengths"] == [-30.0, 0.0]


def test_directions_are_refused_on_another_model_or_size_in_one_line(found, face):
    editor, directions = found
    other = RBEEditor.from_pretrained("toy/faces-ddpm", device="cpu")
    with pytest.raises(RegionEditError) as caught:
        other.apply(face, directions)
    assert "found with model 'tiny/pixel-ddpm', not 'toy/faces-ddpm'" in str(caught.value)
    with pytest.raises(RegionEditError) as size:
        editor.apply(face, directions, max_side=64)  # the same model at 64² gives another h shape
    assert "use an image of the size they were found at" in str(size.value)
    with pytest.raises(RegionEditError, match="these are RBE directions"):
        JICAEditor(editor.model).apply(face, directions)
    assert all("\n" not in str(e.value) for e in (caught, size))


def test_jica_editor_discovers_joint_and_individual_directions(face):
    editor = JICAEditor.from_pretrained("tiny/pixel-ddpm", device="cpu")
    start = editor.invert(face)
    directions = editor.discover(start, ["face:eyes", "face:mouth"], svd_rank=2, joint_rank=1, individual_rank=1,
                                 max_iterations=2)
    assert directions.method == "jica" and directions.labels == ["joint 0", "individual face:eyes 0", "individual face:mouth 0"]
    assert torch.equal(editor.apply(start, directions, 2).pixels, editor.apply(face, directions, 2).pixels)


def test_editors_are_exported_lazily_from_the_package():
    import regionedit
    from regionedit import editors

    assert regionedit.ZoneEditor is editors.ZoneEditor and "RDMEditor" in regionedit.__all__
    with pytest.raises(AttributeError):
        regionedit.NoSuchEditor  # noqa: B018


def test_outputs_save_as_png(zone_editor, scene, tmp_path):
    from regionedit.images import mask_to_pil, read_recipe

    out = zone_editor(scene, "paint the star white", num_inference_steps=2)
    save_png(out.image, tmp_path / "out.png", out.recipe)
    assert read_recipe(tmp_path / "out.png")["method"] == "zone"
    assert mask_to_pil(out.masks["final"]).mode == "L"
