"""The toy worlds: determinism, exact edit masks, instructions and their fields, export."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from regionedit.errors import RegionEditError
from regionedit.toyworld import faces, scenes
from regionedit.toyworld.export import load_png, read_manifest
from regionedit.toyworld.splits import split_seeds


def changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a != b).any(dim=1, keepdim=True)


@pytest.mark.parametrize("generate", [faces.generate_faces, scenes.generate_scenes])
def test_same_seed_same_image_bit_for_bit(generate):
    seeds = split_seeds("train", 10, offset=123)
    first = generate(seeds)
    again = generate(seeds)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    # An image depends on its seed only, not on the batch it was rendered in (chunks of 128).
    inside_big_batch = generate(split_seeds("train", 300, offset=0))
    assert torch.equal(inside_big_batch.images[123:133], first.images)
    other = generate(split_seeds("train", 10, offset=500))
    assert not torch.equal(first.images, other.images)
    # Quantised to 8-bit steps, so saving a PNG loses nothing.
    assert torch.equal((first.images * 255).round() / 255, first.images)


@pytest.mark.parametrize("factor", sorted(faces.FACTORS))
def test_face_replace_changes_pixels_only_inside_the_edit_mask(factor):
    batch = faces.generate_faces(split_seeds("train", 48), track_support=True)
    spec = faces.FACTORS[factor]
    if spec.kind == "categorical":
        value = (batch.factors[factor] + 1) % spec.classes
    elif spec.kind == "binary":
        value = 1 - batch.factors[factor]
    else:
        value = spec.low + (spec.high - spec.low) * torch.rand(len(batch), generator=torch.Generator().manual_seed(1))
    edit = batch.replace(**{factor: value})
    outside = edit.changed & (edit.mask == 0)
    assert not outside.any()
    assert edit.mask.sum() > 0 and torch.equal(edit.target.factors[factor], value.to(batch.factors[factor].dtype))
    assert changed(edit.source.images, edit.target.images).any()


def test_face_parts_and_factor_checks():
    batch = faces.generate_faces(split_seeds("train", 64))
    labels = batch.labels
    assert labels.min() >= 0 and labels.max() < len(faces.PARTS)
    for part in ("background", "hair", "face", "mouth"):
        assert (batch.mask(part).sum(dim=(1, 2, 3)) > 0).all(), part
    open_eyes = batch.factors["eye_openness"] > 0.3
    assert (batch.mask("left_eye").sum(dim=(1, 2, 3))[open_eyes] > 4).all()
    with_hat = batch.factors["hat"] > 0.5
    assert ((batch.mask("hat").sum(dim=(1, 2, 3)) > 0) == with_hat).all()
    with pytest.raises(RegionEditError, match="unknown face factor"):
        batch.replace(nose=1)
    with pytest.raises(RegionEditError, match="must be in"):
        batch.replace(eye_openness=3.0)
    with pytest.raises(RegionEditError, match="must be one of"):
        batch.replace(hair_colour="green")
    edit = batch.replace(hair_colour="blond", hat=True)
    assert (edit.target.factors["hair_colour"] == faces.FACTORS["hair_colour"].choices.index("blond")).all()


def test_faces_render_at_larger_sizes():
    small = faces.generate_faces([1, 2])
    large = faces.generate_faces([1, 2], size=128)
    assert large.images.shape == (2, 3, 128, 128)
    down = torch.nn.functional.avg_pool2d(large.images, 2)
    assert (down - small.images).abs().mean() < 0.02


def test_scene_edits_are_exact_and_complete():
    edits = scenes.generate_edits(split_seeds("train", 400))
    moved = changed(edits.source.images, edits.target.images)
    assert not (moved & (edits.mask == 0)).any()
    assert moved.flatten(1).any(dim=1).all()  # every instruction changes something
    actions = Counter(edits.action)
    assert set(actions) == set(scenes.ACTIONS) and min(actions.values()) > 60
    for action in scenes.ACTIONS:  # several phrasings of each action occur
        verbs = {edits.instruction[i].split()[0] for i in range(len(edits)) if edits.action[i] == action}
        assert len(verbs) >= 3, (action, verbs)
    kinds = {o["kind"] for i in range(len(edits)) for o in edits.source.objects(i)}
    colours = {o["colour"] for i in range(len(edits)) for o in edits.source.objects(i)}
    grounds = set(edits.source.params["ground"].tolist())
    assert kinds == set(scenes.KINDS) and len(colours) == len(scenes.COLOURS) >= 8 and len(grounds) == 4


def test_scene_edit_fields_agree_with_the_parameters():
    edits = scenes.generate_edits(split_seeds("train", 200))
    for i in range(len(edits)):
        slot, action = int(edits.slot[i]), edits.action[i]
        src, tgt = edits.source.params, edits.target.params
        kind_before, kind_after = scenes.KINDS[int(src["kind"][i, slot])], scenes.KINDS[int(tgt["kind"][i, slot])]
        colour_after = scenes.COLOURS[int(tgt["colour"][i, slot])]
        if action == "remove":
            assert src["present"][i, slot] and not tgt["present"][i, slot]
            assert edits.source_object[i] == f"the {kind_before}" and kind_before in edits.instruction[i]
        elif action == "add":
            assert not src["present"][i, slot] and tgt["present"][i, slot] and edits.source_object[i] is None
            assert edits.target_object[i].endswith(f"{colour_after} {kind_after}")
        elif action == "change_colour":
            assert src["colour"][i, slot] != tgt["colour"][i, slot] and colour_after in edits.instruction[i]
        else:
            assert kind_before != kind_after and kind_after in edits.instruction[i]
            assert kind_before != "sun" and kind_after != "sun"
        assert edits.source_caption[i] == edits.source.caption(i)
        assert edits.target_caption[i] == edits.target.caption(i)
        kinds = [o["kind"] for o in edits.target.objects(i)]
        assert len(kinds) == len(set(kinds))  # kinds stay unique, so "the ball" names one object
        if action != "remove":
            assert (edits.target.object_mask(slot)[i].sum() > 0)
    assert any(" an orange " in f" {c} " for c in edits.source_caption)
    with pytest.raises(RegionEditError, match="unknown action"):
        scenes.generate_edits([1], actions=["explode"])


def test_only_requested_actions():
    edits = scenes.generate_edits(split_seeds("train", 50), actions=["remove"])
    assert set(edits.action) == {"remove"}
    assert all(i.split()[0] in {"remove", "get", "delete", "take", "erase"} for i in edits.instruction)


def test_splits_are_disjoint_and_checked():
    train, validation, bench = (set(split_seeds(s, 1000)) for s in ("train", "validation", "benchmark"))
    assert not (train & validation) and not (train & bench) and not (validation & bench)
    with pytest.raises(RegionEditError, match="unknown split"):
        split_seeds("test", 3)


def test_export_writes_pngs_masks_and_manifest(tmp_path, capsys):
    from regionedit.cli import main

    assert main(["toyworld", "export", "scenes", "--n", "6", "--out", str(tmp_path), "-q"]) == 0
    records = read_manifest(tmp_path / "manifest.jsonl")
    assert len(records) == 6 and records[0]["split"] == "benchmark"
    edits = scenes.generate_edits(split_seeds("benchmark", 6))
    for i, record in enumerate(records):
        for key in ("action", "instruction", "source_caption", "target_caption", "source_object", "target_object"):
            assert key in record
        image = load_png(tmp_path / record["image"])
        assert np.array_equal(image, (edits.source.images[i] * 255).round().byte().permute(1, 2, 0).numpy())
        mask = load_png(tmp_path / record["edit_mask"]) > 127
        assert np.array_equal(mask, edits.mask[i, 0].bool().numpy())
        assert np.array_equal(load_png(tmp_path / record["labels"]), edits.source.labels[i].numpy())
    assert main(["toyworld", "export", "faces", "--n", "3", "--out", str(tmp_path / "f"), "-q"]) == 0
    face = read_manifest(tmp_path / "f" / "manifest.jsonl")[0]
    assert set(face["factors"]) == set(faces.FACTORS) and face["label_names"] == list(faces.PARTS)
    json.dumps(face)
