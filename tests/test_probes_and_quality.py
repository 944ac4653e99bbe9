"""The shipped attribute probes and the quality-benchmark harness."""

import json

import pytest
import torch

from regionedit.bench.quality import Identity, Oracle, benchmark_items, edit_success, run_quality
from regionedit.cli import main
from regionedit.errors import RegionEditError
from regionedit.toyworld import faces, probes, scenes
from regionedit.toyworld.splits import split_seeds


@pytest.fixture(scope="module", params=["faces", "scenes"])
def world_probe(request):
    return request.param, probes.load_probe(request.param)


def test_shipped_probes_read_held_out_renders(world_probe):
    world, net = world_probe
    report = probes.evaluate_probe(net, world, count=600, split="validation")
    failing = {name: entry for name, entry in report["heads"].items()
               if min(entry["accuracy"], entry.get("min_class_recall", 1.0)) < 0.93}
    assert not failing, failing  # 600 fresh samples; the model card's 4,000-sample figures are ≥ 0.95


def test_model_cards_state_at_least_95_percent_per_factor_and_class(world_probe):
    world, _ = world_probe
    card = json.loads((probes.WEIGHTS_DIR / f"probe-{world}" / "card.json").read_text())
    assert card["held_out"]["count"] >= 4000 and card["held_out"]["split"] == "validation"
    for name, entry in card["held_out"]["heads"].items():
        assert entry["accuracy"] >= 0.95, name
        assert entry.get("min_class_recall", 1.0) >= 0.95, name
    for key in ("data", "settings", "hardware", "wall_seconds", "reproduce"):
        assert key in card


def test_instructions_agree_with_their_targets():
    """Over 1,000 scene edits the probe finds the asked colour / object in the target, and the
    removed object gone; the unedited source fails the same checks."""
    items = benchmark_items("scenes", 1000)
    net = probes.load_probe("scenes")
    on_target = edit_success("scenes", items, torch.stack([i.target for i in items]), net)
    on_source = edit_success("scenes", items, torch.stack([i.image for i in items]), net)
    assert on_target.float().mean() >= 0.97
    assert on_source.float().mean() <= 0.05


def test_face_edit_instructions_agree_with_their_targets():
    items = benchmark_items("faces", 500)
    net = probes.load_probe("faces")
    assert edit_success("faces", items, torch.stack([i.target for i in items]), net).float().mean() >= 0.95
    assert edit_success("faces", items, torch.stack([i.image for i in items]), net).float().mean() <= 0.05


@pytest.mark.parametrize("world", ["faces", "scenes"])
def test_quality_harness_extremes(world):
    identity = run_quality(world, Identity(), count=120)
    oracle = run_quality(world, Oracle(), count=120)
    for result in (identity, oracle):
        overall = result["results"]["overall"]
        assert overall["count"] == 120 and overall["background_psnr"] == 100.0 and overall["background_l1"] == 0.0
        assert set(result["results"]) - {"overall"}  # per action rows
    assert identity["results"]["overall"]["edit_success"] <= 0.05
    assert identity["results"]["overall"]["mask_iou"] is None
    assert oracle["results"]["overall"]["edit_success"] >= 0.95
    assert oracle["results"]["overall"]["mask_iou"] == 1.0
    # structure distance (scenes: the toy CLIP's keys): zero for an unchanged image, positive for a real edit
    if world == "scenes":
        assert identity["results"]["overall"]["structure_distance"] == 0.0
        assert oracle["results"]["overall"]["structure_distance"] > 0.1
    else:
        assert "structure_distance" not in oracle["results"]["overall"]
        assert "object_mask_iou" not in oracle["results"]["overall"]


def test_mask_iou_with_the_named_object_scores_the_object_an_edit_names():
    from regionedit.toyworld.benchmark import MethodOutput

    class NamedObject:  # leaves the image, and its mask is exactly the object the instruction names
        name = "named-object"

        def edit(self, items):
            return [MethodOutput(item.image, item.object_mask[0] if item.object_mask is not None else None) for item in items]

    rows = run_quality("scenes", NamedObject(), count=120)["results"]
    assert rows["add"]["object_mask_iou"] is None and rows["add"]["mask_iou"] is None  # nothing to name yet
    assert all(rows[action]["object_mask_iou"] == 1.0 for action in ("change_colour", "change_object", "remove"))
    # an object change's edit mask covers the old object and the new one: the old alone scores below 1
    assert rows["change_object"]["mask_iou"] < 0.95
    assert run_quality("scenes", Oracle(), count=120)["results"]["change_object"]["object_mask_iou"] < 0.95


def test_bench_quality_cli_writes_json_and_markdown(tmp_path, capsys):
    out, md = tmp_path / "q.json", tmp_path / "q.md"
    assert main(["bench", "quality", "--world", "scenes", "--method", "oracle", "--n", "20", "--json", str(out),
                 "--md", str(md), "-q"]) == 0
    result = json.loads(out.read_text())
    assert result["method"] == "oracle" and result["count"] == 20 and "seconds_per_edit" in result
    assert result["options"] == {}
    assert "| overall | 20 |" in md.read_text()
    assert main(["bench", "quality", "--world", "scenes", "--method", "nope", "--n", "2"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_probe_training_smoke_run(tmp_path):
    assert main(["toyworld", "train", "probe-scenes", "--smoke", "--out", str(tmp_path), "-q"]) == 0
    net = probes.load_probe("scenes", tmp_path)
    assert set(probes.predict(net, scenes.generate_scenes([1, 2]).images)) == {h.name for h in probes.scene_heads()}
    with pytest.raises(RegionEditError, match="no faces probe"):
        probes.load_probe("faces", tmp_path / "missing")


def test_face_labels_hide_what_cannot_be_seen():
    batch = faces.generate_faces(split_seeds("train", 64))
    labels = probes.face_labels(batch.factors)
    _, weight = labels["iris_colour"]
    assert torch.equal(weight.bool(), batch.factors["eye_openness"] >= 0.35)
    _, weight = labels["hat_colour"]
    assert torch.equal(weight.bool(), batch.factors["hat"] > 0.5)


@pytest.mark.parametrize("variant, options", [("ddpm", {"skip": 1}), ("ddim", {"skip": 1}), ("ddpm-p2p", {"skip": 1}), ("ddim-p2p", {}),
                                              ("ddpm-p2p", {"skip": 1, "local_blend": True})])
def test_caption_editing_runs_on_caption_edits_only(variant, options):
    from regionedit.bench.quality import make_method, run_quality

    method = make_method(variant, "scenes", {"model": "tiny/sd", "num_inference_steps": 4, **options})
    result = run_quality("scenes", method, count=4)
    assert result["method"] == variant + ("-blend" if options.get("local_blend") else "") and result["count"] == 4
    assert set(result["results"]) <= {"change_colour", "change_object", "overall"}
    assert 0 <= result["results"]["overall"]["background_psnr"] <= 100


class _OnePixelSegmenter:
    """Locates one pixel (or nothing), and remembers what it was asked."""

    def __init__(self, found: bool):
        self.found, self.asked = found, []

    def locate(self, image, text, threshold, dilation=0):
        from regionedit.errors import NothingLocated
        from regionedit.masks import dilate
        from regionedit.segment import TextMask

        self.asked.append((text, threshold, dilation))
        if not self.found:
            raise NothingLocated(f"{text!r} matched nothing")
        mask = torch.zeros(1, 1, *image.shape[-2:])
        mask[..., 30, 30] = 1
        return TextMask(dilate(mask, dilation), mask, text, threshold)


@pytest.mark.parametrize("found", [True, False])
def test_caption_editing_blends_from_the_text_located_source_object(found):
    from regionedit.bench.quality import make_method
    from regionedit.toyworld.benchmark import benchmark_items

    options = {"model": "tiny/sd", "num_inference_steps": 4, "skip": 1, "local_blend": "text", "segmenter": "tiny/clipseg",
               "text_threshold": 120, "blend_dilation": 5}
    method = make_method("ddpm-p2p", "scenes", options)
    assert method.name == "ddpm-p2p-blend-text"
    method.segmenter = _OnePixelSegmenter(found)
    item = benchmark_items("scenes", 1, actions=["change_colour"])[0]
    output = method.edit([item])[0]
    assert method.segmenter.asked == [(item.record["source_object"], 120, 5)]
    if found:  # pixels 25..35 grown from (30, 30): the 8-pixel latent cells 3..4 of the tiny SD, and nothing else
        expected = torch.zeros(64, 64)
        expected[24:40, 24:40] = 1
        assert output.refused is None and torch.equal(output.mask, expected)
    else:
        assert output.refused and torch.equal(output.image, item.image) and output.mask.sum() == 0
    with pytest.raises(RegionEditError, match="blend_dilation must be"):
        make_method("ddpm-p2p", "scenes", {**options, "blend_dilation": -1})


def test_caption_editing_can_locate_the_object_by_its_source_caption_words():
    from regionedit.bench.adapters import caption_phrase
    from regionedit.bench.quality import make_method
    from regionedit.toyworld.benchmark import benchmark_items

    assert caption_phrase("a red ball and an orange box on grass", "box") == "an orange box"
    assert caption_phrase("a red ball and an orange box on grass", "ball") == "a red ball"
    assert caption_phrase("a red ball on grass", "tree") == "tree"
    options = {"model": "tiny/sd", "num_inference_steps": 4, "skip": 1, "local_blend": "text", "segmenter": "tiny/clipseg",
               "blend_text": "caption"}
    method = make_method("ddpm-p2p", "scenes", options)
    assert method.name == "ddpm-p2p-blend-caption"
    method.segmenter = _OnePixelSegmenter(True)
    item = benchmark_items("scenes", 1, actions=["change_object"])[0]
    method.edit([item])
    (text, _, _), = method.segmenter.asked
    kind = item.record["source_object"].split()[-1]
    assert text.endswith(" " + kind) and len(text.split()) == 3 and text in item.record["source_caption"]
    with pytest.raises(RegionEditError, match="blend_text is 'object'"):
        make_method("ddpm-p2p", "scenes", {**options, "blend_text": "words"})


def test_caption_editing_blends_by_the_edited_kinds():
    from regionedit.bench.adapters import _kind_words
    from regionedit.bench.quality import make_method

    assert _kind_words({"source_object": "a red ball", "target_object": "a blue ball"}) == ["ball"]
    assert _kind_words({"source_object": "a red box", "target_object": "a red ball"}) == ["box", "ball"]
    with pytest.raises(RegionEditError, match="local_blend is a Prompt-to-Prompt option"):
        make_method("ddpm", "scenes", {"model": "tiny/sd", "local_blend": True})
