"""The training pipelines of the embedded toy-world models, run as smoke tests: every model trains
for two tiny steps, saves, loads through the regular loaders, runs its method and is measured by
`regionedit bench toymodels`' functions. (The real runs take hours of CPU time.)"""

import json
import os

import pytest
import torch

from regionedit.cli import main
from regionedit.models import load_model
from regionedit.segment import load_clip, load_segmenter
from regionedit.toyworld import models
from regionedit.toyworld.evaluation import generate
from regionedit.toyworld.train import MODELS, TRAINABLE, weights_size_mb

CHAIN = ["scenes-clip", "scenes-vae", "scenes-clipseg", "faces-ddpm", "scenes-t2i", "scenes-instruct",
         "scenes-instruct-remove", "faces-vae", "faces-ldm"]
LATENT = ("scenes-t2i", "scenes-instruct", "scenes-instruct-remove")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    weights = tmp_path_factory.mktemp("weights")
    for name in CHAIN:
        assert main(["toyworld", "train", name, "--smoke", "--weights", str(weights), "-q"]) == 0, name
    return weights


def test_every_model_trains_saves_and_has_a_card(trained):
    for name in CHAIN:
        card = json.loads((trained / name / "card.json").read_text())
        assert card["smoke"] and card["settings"]["steps"] == 2
        # the recipe's own choices are spelled out, so the command still reproduces if a default moves
        recipe = "".join(f" --{flag} {MODELS[name][key]:g}" for key, flag in (("edit_weight", "edit-weight"), ("dice_weight", "dice-weight"),
                                                                                     ("absent_weight", "absent-weight"))
                         if key in MODELS[name])
        assert card["reproduce"] == f"regionedit toyworld train {name} --steps 2 --batch 4{recipe}"
        assert card["evaluation"] and card["hardware"]
    # The latent scene models share scenes-clip's text tower and scenes-vae through symlinks: stored once.
    for name in LATENT:
        assert os.path.islink(trained / name / "text_encoder") and os.readlink(trained / name / "text_encoder") == "../scenes-clip"
        assert os.readlink(trained / name / "vae") == "../scenes-vae"
    assert os.readlink(trained / "faces-ldm" / "vae") == "../faces-vae" and not (trained / "faces-ldm" / "text_encoder").exists()
    clip_mb, vae_mb = weights_size_mb(trained / "scenes-clip"), weights_size_mb(trained / "scenes-vae")
    followed = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(trained, followlinks=True) for f in files)
    # text_encoder and tokenizer of three models link to scenes-clip, their vae to scenes-vae, faces-ldm's
    # to faces-vae: no copies
    faces_vae_mb = weights_size_mb(trained / "faces-vae")
    assert weights_size_mb(trained) == pytest.approx(followed / 2**20 - 6 * clip_mb - 3 * vae_mb - faces_vae_mb, abs=0.01)
    # the embedded set must stay under 40 MB with the probes (3.2 MB); faces-ldm with faces-vae is a
    # candidate to replace faces-ddpm, so one faces line counts
    assert weights_size_mb(trained) - weights_size_mb(trained / "faces-ddpm") < 36.5


def test_trained_models_load_and_run_their_methods(trained):
    from regionedit.methods import rdm, zone
    from regionedit.toyworld.scenes import generate_edits

    faces = load_model(str(trained / "faces-ddpm"), device="cpu")
    assert faces.conditioning == "none" and faces.native_resolution == 64
    t2i = load_model(str(trained / "scenes-t2i"), device="cpu")
    instruct = load_model(str(trained / "scenes-instruct"), device="cpu")
    remove = load_model(str(trained / "scenes-instruct-remove"), device="cpu")
    assert (t2i.conditioning, instruct.conditioning, t2i.is_latent, instruct.is_latent) == ("text", "instruct", True, True)
    assert (t2i.native_resolution, instruct.native_resolution, t2i.prediction_type) == (64, 64, "v_prediction")
    assert t2i.tokenizer.model_max_length == models.TEXT_LENGTH
    # the bars' samplers draw at the native resolution: a latent model diffuses its latent size, not 64²
    assert generate(t2i, 2, ["a red ball", "a blue box"], steps=2).shape == (2, 3, 64, 64)
    assert generate(faces, 1, steps=2).shape == (1, 3, 64, 64)
    edits = generate_edits([3], actions=["change_colour"])
    image = edits.source.images
    out = zone.edit(instruct, image, edits.instruction[0], second_model=remove, num_inference_steps=2, progress=False)
    result = (torch.from_numpy(__import__("numpy").asarray(out.image)).permute(2, 0, 1).float() / 255)
    outside = out.final_mask[0].expand_as(result) == 0
    assert torch.allclose(result[outside], image[0][outside], atol=1 / 255)
    segmenter = load_segmenter(str(trained / "scenes-clipseg"), "cpu")
    clip = load_clip(str(trained / "scenes-clip"), "cpu")
    located = rdm.edit(t2i, image, edits.target_object[0], locate=edits.source_object[0], segmenter=segmenter, clip=clip,
                       threshold=1, num_inference_steps=2, progress=False)
    assert located.image.size == (64, 64)


def test_latent_faces_model_loads_samples_and_runs_rbe(trained):
    """faces-vae starts from scenes-vae and is measured on faces; faces-ldm is an unconditional latent
    model that the regular loader runs, and RBE's region (pixels) maps onto its 16² latents."""
    from regionedit.methods import rbe
    from regionedit.methods.hspace_edit import start_from_image
    from regionedit.toyworld.evaluation import eval_vae
    from regionedit.toyworld.faces import generate_faces

    card = json.loads((trained / "faces-vae" / "card.json").read_text())
    assert card["settings"]["world"] == "faces" and "tuned from scenes-vae" in card["settings"]["data"]
    assert eval_vae(4, location=trained / "faces-vae")["world"] == "faces"
    assert eval_vae(4, location=trained / "scenes-vae")["world"] == "scenes"
    model = load_model(str(trained / "faces-ldm"), device="cpu")
    assert (model.conditioning, model.is_latent, model.native_resolution, model.prediction_type) == ("none", True, 64, "v_prediction")
    assert generate(model, 2, steps=2).shape == (2, 3, 64, 64)
    face = generate_faces([5]).images
    start = start_from_image(model, face, timestep=500, num_inference_steps=4)
    assert start.x_t.shape == (1, 4, 16, 16)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 20:36, 16:48] = 1
    directions = rbe.discover(model, start, mask, k=2, complement_rank=2, max_iterations=3)
    assert directions.vectors.shape[0] == 2


def test_training_needs_its_prerequisites(tmp_path, capsys):
    assert main(["toyworld", "train", "scenes-t2i", "--smoke", "--weights", str(tmp_path), "-q"]) == 2
    assert "train it first" in capsys.readouterr().err
    assert main(["toyworld", "train", "nothing", "--smoke", "-q"]) == 2
    assert set(CHAIN) <= set(TRAINABLE)


def test_toy_vocabulary_covers_captions_and_instructions():
    from regionedit.toyworld.scenes import generate_edits

    tokenizer = models.toy_tokenizer()
    edits = generate_edits(list(range(200)))
    words = {w for text in edits.instruction + edits.source_caption for w in text.replace(",", " ").split()}
    assert words <= set(models.vocabulary())
    assert all(len(tokenizer(text).input_ids) <= models.TEXT_LENGTH for text in edits.source_caption)


def test_pool_draws_repeatably_and_refreshes():
    stream = models.FaceStream(4)

    def draws(refresh_every):
        pool = models.Pool(models.batches(stream, "cpu"), batch=4, size=8, refresh_every=refresh_every, seed=3)
        start = pool.fields["x0"].clone()
        out = [next(pool).x0 for _ in range(5)]
        return start, pool.fields["x0"], out

    start, end, first = draws(2)
    _, _, second = draws(2)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # seeded: same batches
    assert not torch.equal(start, end)  # fresh renders replaced some slots
    pooled = {tuple(row.flatten()[:8].tolist()) for row in start.float()}
    assert {tuple(row.flatten()[:8].tolist()) for row in first[0]} <= pooled  # the first draw comes from the pool
    _, never, _ = draws(100)
    assert torch.equal(start, never)


def test_resume_continues_from_the_folder_and_chains_the_history(tmp_path, capsys):
    weights = tmp_path / "w"
    assert main(["toyworld", "train", "faces-ddpm", "--resume", "--smoke", "--weights", str(weights), "-q"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["toyworld", "train", "faces-ddpm", "--smoke", "--weights", str(weights), "-q"]) == 0
    before = load_model(str(weights / "faces-ddpm"), device="cpu").unet.state_dict()
    assert main(["toyworld", "train", "faces-ddpm", "--resume", "--learning-rate", "0", "--smoke", "--weights", str(weights), "-q"]) == 2
    assert "learning_rate must be positive" in capsys.readouterr().err
    # a resumed run may anneal at a lower rate: the card records it and the command repeats it
    assert main(["toyworld", "train", "faces-ddpm", "--resume", "--learning-rate", "1e-4", "--smoke", "--weights", str(weights),
                 "-q"]) == 0
    card = json.loads((weights / "faces-ddpm" / "card.json").read_text())
    assert card["settings"]["steps"] == 4 and len(card["history"]) == 2
    assert [run["learning_rate"] for run in card["history"]] == [MODELS["faces-ddpm"]["learning_rate"], 1e-4]
    assert card["reproduce"] == ("regionedit toyworld train faces-ddpm --steps 2 --batch 4 && "
                                 "regionedit toyworld train faces-ddpm --steps 2 --batch 4 --learning-rate 0.0001 --resume")
    after = load_model(str(weights / "faces-ddpm"), device="cpu").unet.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # two more steps moved the weights


def test_clipseg_resume_continues_from_the_saved_segmenter(trained, tmp_path):
    import shutil

    from transformers import CLIPSegForImageSegmentation

    weights = tmp_path / "w"
    for name in ("scenes-clip", "scenes-clipseg"):
        shutil.copytree(trained / name, weights / name)
    saved = CLIPSegForImageSegmentation.from_pretrained(weights / "scenes-clipseg")
    with torch.no_grad():
        saved.decoder.reduces[0].bias.fill_(7.0)  # a mark no fresh initialisation has
    saved.save_pretrained(weights / "scenes-clipseg")
    assert main(["toyworld", "train", "scenes-clipseg", "--resume", "--smoke", "--phrases-per-scene", "2",
                 "--weights", str(weights), "-q"]) == 0
    resumed = CLIPSegForImageSegmentation.from_pretrained(weights / "scenes-clipseg")
    # two AdamW steps at a warming-up rate of at most 3e-4 each move a weight by far less than 0.01
    assert torch.allclose(resumed.decoder.reduces[0].bias.float(), torch.full_like(resumed.decoder.reduces[0].bias.float(), 7.0),
                          atol=0.01)
    card = json.loads((weights / "scenes-clipseg" / "card.json").read_text())
    assert len(card["history"]) == 2 and card["reproduce"].endswith("--dice-weight 1 --phrases-per-scene 2 --resume")
    assert "2 phrases per scene" in card["settings"]["data"]


def test_clipseg_keeps_the_clip_towers_frozen_unless_told_to_tune_one(trained, tmp_path):
    import shutil

    from transformers import CLIPModel, CLIPSegForImageSegmentation

    from regionedit.toyworld.training import clipseg_logits

    clip = CLIPModel.from_pretrained(trained / "scenes-clip")

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))

    frozen = CLIPSegForImageSegmentation.from_pretrained(trained / "scenes-clipseg")
    assert same(frozen.clip.text_model, clip.text_model) and same(frozen.clip.vision_model, clip.vision_model)  # the paper's
    shutil.copytree(trained / "scenes-clip", tmp_path / "scenes-clip")
    # transformers' CLIPSeg runs its towers under no_grad: only our own forward lets a tower move
    for flags, text_moves, vision_moves in ((["--tune-text"], True, False), (["--tune-vision"], False, True)):
        assert main(["toyworld", "train", "scenes-clipseg", *flags, "--smoke", "--weights", str(tmp_path), "-q"]) == 0
        tuned = CLIPSegForImageSegmentation.from_pretrained(tmp_path / "scenes-clipseg").eval()
        assert torch.equal(tuned.clip.text_projection.weight, clip.text_projection.weight) is not text_moves
        assert same(tuned.clip.text_model, clip.text_model) is not text_moves
        assert same(tuned.clip.vision_model, clip.vision_model) is not vision_moves
        card = json.loads((tmp_path / "scenes-clipseg" / "card.json").read_text())
        assert card["reproduce"].endswith(flags[0]) and f"{'vision' if vision_moves else 'text'} tower fine-tuned" in card["settings"]["data"]
    # training computes exactly what inference does, whichever towers it tunes
    ids = models.toy_tokenizer()(["a red ball", "the box"], padding="max_length", max_length=models.TEXT_LENGTH,
                                 return_tensors="pt").input_ids
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = tuned(input_ids=ids, pixel_values=pixels).logits
        for text, vision in ((False, False), (True, False), (False, True), (True, True)):
            assert torch.equal(clipseg_logits(tuned, pixels, ids, text, vision), expected)
        # K phrases per image: the vision tower runs once per image, the decoder once per phrase
        per_phrase = tuned(input_ids=ids, pixel_values=pixels[:1].repeat(2, 1, 1, 1)).logits
        assert torch.equal(clipseg_logits(tuned, pixels[:1], ids, False, True), per_phrase)
    with pytest.raises(ValueError, match="evenly"):
        clipseg_logits(tuned, pixels, ids[:1].repeat(3, 1))
    for flag in ("--tune-text", "--tune-vision", "--phrases-per-scene=2"):
        assert main(["toyworld", "train", "faces-ddpm", flag, "--smoke", "--weights", str(tmp_path), "-q"]) == 2
    for bad in ("0", "3"):  # at least 1, and a divisor of the batch (4 in a smoke run)
        assert main(["toyworld", "train", "scenes-clipseg", "--phrases-per-scene", bad, "--smoke", "--weights", str(tmp_path),
                     "-q"]) == 2


def test_several_phrases_per_scene_share_its_render_and_keep_the_phrase_draws():
    from regionedit.toyworld.streams import SegmentStream, object_phrases, phrase_masks

    tokenizer = models.toy_tokenizer()
    single, shared = SegmentStream(tokenizer, 24, seed=3), SegmentStream(tokenizer, 24, seed=3, phrases_per_scene=4)
    pixels, ids, masks, kinds = shared.materialise(shared.make(5), "cpu")
    assert pixels.shape == (6, 3, 64, 64) and ids.shape[0] == masks.shape[0] == 24 and kinds.shape == (6, 64, 64)
    # the six scenes are the single-phrase stream's batch-of-six scenes; row s·4 + k names scene s
    scenes = SegmentStream(tokenizer, 6, seed=3).materialise(SegmentStream(tokenizer, 6, seed=3).make(5), "cpu")[0]
    assert torch.equal(pixels, scenes)
    from regionedit.toyworld import scenes as scenes_world

    params = scenes_world.sample_params(shared.seeds(5))
    labels = scenes_world.render(params).labels.repeat_interleave(4, 0)
    named = {key: values.repeat_interleave(4, 0) for key, values in params.items()}
    phrases, slots = object_phrases(named, shared.generator(5), coloured_absent=True)
    assert torch.equal(masks, phrase_masks(labels, torch.tensor(slots)))
    assert len({tuple(ids[4 * s : 4 * s + 4].flatten().tolist()) for s in range(6)}) > 1
    # one phrase per scene is the stream it always was (old runs still reproduce)
    pixels1, ids1, _, _ = single.materialise(single.make(5), "cpu")
    assert pixels1.shape[0] == 24 and torch.equal(ids1, SegmentStream(tokenizer, 24, seed=3, phrases_per_scene=1).make(5)["ids"])
    with pytest.raises(Exception, match="multiple of phrases_per_scene"):
        SegmentStream(tokenizer, 24, phrases_per_scene=5)


def test_a_checkpoint_notes_its_steps_and_resume_reads_it_first(tmp_path):
    from regionedit.toyworld.train import _checkpointer, _progress

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"history": [{"steps": 5, "command": "first"}]}))
    context = {"name": "faces-ddpm", "batch": 8, "folder": folder, "resume": True, "speed": models.Speed(pool=16),
               "history": [{"steps": 5, "command": "first"}]}
    saved = []
    _checkpointer(context, saved.append)("ema", 7)
    assert saved == ["ema"]
    progress = _progress(folder)
    assert [h["steps"] for h in progress["history"]] == [5, 7]
    assert progress["history"][-1]["command"].endswith("--steps 7 --batch 8 --pool 16 --refresh-every 4 --resume")


def test_bars_need_every_action_and_the_remove_model_must_beat_the_main_one_or_remove_90_percent():
    from regionedit.bench.toymodels import meets_bar

    assert meets_bar("toy/scenes-clip", {"text_to_image_top1": 0.91}) is True
    assert meets_bar("toy/faces-ddpm", {"valid_face_share": 0.27}) is False
    assert meets_bar("toy/scenes-instruct", {"edit_success": {"add": 0.9, "remove": 0.7, "overall": 0.85}}) is False
    assert meets_bar("toy/scenes-instruct", {"edit_success": {"add": 0.9, "remove": 0.8, "overall": 0.85}}) is True
    assert meets_bar("toy/scenes-clip", {"error": "x"}) is None
    # CLIPSeg: IoU on present objects and empty masks for absent ones, both
    assert meets_bar("toy/scenes-clipseg", {"mean_iou": 0.85, "absent_empty_share": 0.95}) is True
    assert meets_bar("toy/scenes-clipseg", {"mean_iou": 0.85, "absent_empty_share": 0.5}) is False
    assert meets_bar("toy/scenes-clipseg", {"mean_iou": 0.5, "absent_empty_share": 0.95}) is False
    def removals(share):
        return {"edit_success": {"remove": share}}

    assert meets_bar("toy/scenes-instruct-remove", removals(0.75), removals(0.6)) is True  # 15 points above the main model
    assert meets_bar("toy/scenes-instruct-remove", removals(0.65), removals(0.6)) is False  # above it, but by 5 points
    assert meets_bar("toy/scenes-instruct-remove", removals(0.6), removals(0.75)) is False
    assert meets_bar("toy/scenes-instruct-remove", removals(0.92), removals(0.99)) is True  # or ≥ 90 % removals
    assert meets_bar("toy/scenes-instruct-remove", removals(0.75), None) is None  # nothing to compare with


def test_model_status_names_only_the_figures_that_miss_their_bar(tmp_path):
    from regionedit.toyworld.bars import model_status

    folder = tmp_path / "scenes-clipseg"
    folder.mkdir()
    def status(**figures):
        (folder / "card.json").write_text(json.dumps({"evaluation": figures}))
        return model_status(folder)

    line = status(mean_iou=0.85, absent_empty_share=0.88, meets_bar=False)
    assert "empty masks for absent objects 0.88 < 0.9" in line and "mean_iou" not in line
    line = status(mean_iou=0.75, absent_empty_share=0.95, meets_bar=False)
    assert "mean_iou 0.75 < 0.8" in line and "absent" not in line
    assert status(mean_iou=0.85, absent_empty_share=0.95, meets_bar=True).startswith("meets its quality bar")


def test_bench_training_times_every_model(tmp_path):
    out = tmp_path / "t.json"
    assert main(["bench", "training", "--device", "cpu", "--batch", "2", "--repeats", "1", "--json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"faces-ddpm", "scenes-vae", "scenes-t2i", "scenes-instruct", "scenes-clip"}
    assert all(m["step_s"] > 0 and m["device_half_s"] > 0 for m in result["models"].values())


# ------------------------------------------------------------------------- the shipped weights
def test_shipped_weights_load_offline_within_budget_and_say_what_they_measured(capsys):
    from regionedit.models.loading import WEIGHTS_DIR, embedded_models

    assert weights_size_mb(WEIGHTS_DIR) <= 40
    embedded = embedded_models()
    assert {"toy/scenes-clip", "toy/faces-ddpm", "toy/faces-ldm"} <= set(embedded)
    for name, folder in embedded.items():
        card = json.loads((folder / "card.json").read_text())
        assert card["evaluation"]["meets_bar"] in (True, False) and "command" in card["evaluation"], name
    faces = load_model("toy/faces-ddpm", device="cpu")  # the socket guard fails any network use
    assert faces.native_resolution == 64 and faces.conditioning == "none"
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    for name, folder in embedded.items():
        met = json.loads((folder / "card.json").read_text())["evaluation"]["meets_bar"]
        line = next(line for line in listed.splitlines() if line.strip().startswith(name))
        assert ("PRELIMINARY" in line) == (not met), line


def test_shipped_clip_retrieves_benchmark_scenes_from_their_captions():
    from regionedit.bench.toymodels import eval_clip

    assert eval_clip(load_clip("toy/scenes-clip", "cpu"), 40)["text_to_image_top1"] >= 0.9


def test_shipped_clipseg_locates_named_objects_and_leaves_absent_ones_empty():
    from regionedit.toyworld.evaluation import eval_clipseg

    # 60 validation scenes (50 named objects, 10 absent kinds): 0.86 / 1.0 when shipped; the bars are 0.8 / 0.9
    result = eval_clipseg(load_segmenter("toy/scenes-clipseg", "cpu"), 60, split="validation")
    assert result["mean_iou"] >= 0.8 and min(result["mean_iou_by_style"].values()) >= 0.75
    assert result["absent_empty_share"] >= 0.8


def test_web_app_defaults_to_the_embedded_models_it_has():
    pytest.importorskip("gradio")
    from regionedit.app import DEFAULT_MODELS, default_models
    from regionedit.models.loading import embedded_models

    embedded, defaults = embedded_models(), default_models()
    assert (defaults["rbe"], defaults["jica"]) == ("toy/faces-ldm", "toy/faces-ddpm")
    for tab, (toy, tiny) in DEFAULT_MODELS.items():
        assert defaults[tab] == (toy if toy in embedded else tiny)


# ------------------------------------------------------------------------- latent training pieces
def _random_encoding():
    from transformers import CLIPModel, CLIPTextModel

    from regionedit.toyworld import latent

    tokenizer = models.toy_tokenizer()
    clip = CLIPModel(models.clip_config(tokenizer))
    text = models.TextEncoding(CLIPTextModel(clip.config.text_config).eval().requires_grad_(False))
    return tokenizer, latent.LatentEncoding(latent.toy_autoencoder().eval().requires_grad_(False), text)


def test_latent_instruct_stream_marks_the_edited_region_and_drops_conditions():
    from regionedit.toyworld import latent
    from regionedit.toyworld.scenes import render

    tokenizer, encoding = _random_encoding()
    stream = latent.LatentInstructionStream(tokenizer, encoding, batch=16)
    item = stream.make(0)
    batch = stream.materialise(item, "cpu")
    assert batch.x0.shape == (16, 4, 16, 16) and batch.source.shape == (16, 4, 16, 16) and batch.text.shape[0] == 16
    source, target = render(item["source"]).images, render(item["target"]).images
    changed = (source - target).abs().amax(dim=1) > 0.02  # B×64×64
    for i in range(16):  # the weight covers exactly the 4×4 cells where the target differs from the source
        cells = changed[i].view(16, 4, 16, 4).any(dim=3).any(dim=1)
        assert torch.equal(batch.weight[i, 0].bool(), cells)
    dropped = item["no_image"]
    assert torch.equal(batch.source[dropped].abs().sum((1, 2, 3)) == 0, torch.ones(int(dropped.sum()), dtype=torch.bool))
    assert torch.equal(stream.make(0)["ids"], item["ids"])  # a batch is a function of its index


def test_latent_loss_weighs_the_edit_region_and_min_snr():
    from regionedit.toyworld import latent

    alphas = latent.latent_schedule().alphas_cumprod
    zero = lambda x, t, encoder_hidden_states: type("Out", (), {"sample": torch.zeros(x.shape[0], 4, 16, 16)})()  # noqa: E731
    x0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    weight = torch.zeros(2, 1, 16, 16)
    weight[:, :, :4, :4] = 1
    batch = latent.LatentBatch(x0, torch.zeros(2, 3, 128), torch.zeros(2, 4, 16, 16), weight)
    losses = {}
    for edit_weight in (1.0, 5.0):
        torch.manual_seed(3)  # the same noise and timesteps for both
        losses[edit_weight] = float(latent.latent_diffusion_loss(zero, alphas, edit_weight, None)(batch))
    torch.manual_seed(3)
    noise, t = torch.randn_like(x0), torch.randint(0, len(alphas), (2,))
    a = alphas[t].view(-1, 1, 1, 1)
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    assert losses[1.0] == pytest.approx(float((v**2).mean()), rel=1e-5)
    assert losses[5.0] == pytest.approx(float((v**2 * (1 + 4 * weight)).mean()), rel=1e-5)
    snr = alphas / (1 - alphas)
    assert torch.allclose(latent.min_snr_weight(alphas, 5.0), snr.clamp(max=5) / (snr + 1))


def test_min_snr_gamma_reaches_the_latent_recipe_and_the_card_and_is_refused_elsewhere(trained, tmp_path, capsys):
    out = tmp_path / "t2i"
    assert main(["toyworld", "train", "scenes-t2i", "--smoke", "--weights", str(trained), "--out", str(out),
                 "--min-snr-gamma", "5", "-q"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["settings"]["recipe"]["min_snr_gamma"] == 5.0
    assert card["reproduce"] == "regionedit toyworld train scenes-t2i --steps 2 --batch 4 --min-snr-gamma 5"
    for name, gamma in (("scenes-clip", "5"), ("scenes-t2i", "0")):
        assert main(["toyworld", "train", name, "--smoke", "--weights", str(trained), "--out", str(tmp_path / name),
                     "--min-snr-gamma", gamma, "-q"]) == 2
        assert "min_snr_gamma is a positive setting of the latent diffusion models" in capsys.readouterr().err


def test_a_signal_stops_training_after_the_current_step_and_the_run_ends_as_finished():
    import signal

    from regionedit.toyworld.training import Budget, Trainer

    before = signal.getsignal(signal.SIGTERM)
    trainer = Trainer(torch.nn.Linear(2, 1), "cpu", 1e-3)
    drawn = []

    def data():
        while True:
            drawn.append(len(drawn))
            if len(drawn) == 3:  # a `kill -TERM` arrives while the third batch is prepared
                os.kill(os.getpid(), signal.SIGTERM)
            yield torch.ones(4, 2)

    budget = Budget(100)
    steps = trainer.run(data(), lambda x: trainer.module(x).pow(2).mean(), budget)
    assert steps == 3 and trainer.step_count == 3 and budget.stopped_by == "signal"
    assert signal.getsignal(signal.SIGTERM) == before  # the process's own handling is back
    budget = Budget(2)
    assert trainer.run(data(), lambda x: trainer.module(x).pow(2).mean(), budget) == 3 and budget.stopped_by == "steps"


def test_absent_phrases_name_a_missing_kind_and_in_training_carry_colours_too():
    from regionedit.toyworld import scenes as scenes_world
    from regionedit.toyworld.splits import split_seeds
    from regionedit.toyworld.streams import object_phrases

    scenes = scenes_world.generate_scenes(split_seeds("validation", 120))
    for coloured in (False, True):
        phrases, slots = object_phrases(scenes.params, torch.Generator().manual_seed(0), coloured_absent=coloured)
        absent = [(i, p) for i, (p, s) in enumerate(zip(phrases, slots, strict=True)) if s < 0]
        assert len(absent) >= 10
        for i, phrase in absent:
            kind = phrase.split()[-1]
            assert kind not in {o["kind"] for o in scenes_world.scene_objects(scenes.params, i)}, phrase
        with_colour = [p for _, p in absent if len(p.split()) == 3]
        # the benchmark names an absent kind bare; training also names it the way present objects are
        # named, so that the phrase's form tells nothing about presence
        assert (not with_colour) if not coloured else 0.4 < len(with_colour) / len(absent) < 0.95
    # the benchmark's phrases do not move when training's options change
    assert object_phrases(scenes.params, torch.Generator().manual_seed(0))[0][:5] == \
        ["the green box", "the house", "a brown tree", "the purple house", "the house"]


def test_bare_share_sets_how_often_present_objects_are_named_by_their_kind_alone():
    from regionedit.errors import RegionEditError
    from regionedit.toyworld import scenes as scenes_world
    from regionedit.toyworld.splits import split_seeds
    from regionedit.toyworld.streams import SegmentStream, object_phrases

    scenes = scenes_world.generate_scenes(split_seeds("validation", 300))

    def bare_share(share, absent_share=None, absent=False):
        phrases, slots = object_phrases(scenes.params, torch.Generator().manual_seed(0), True, bare_share=share,
                                        absent_bare_share=absent_share)
        named = [p for p, s in zip(phrases, slots, strict=True) if (s < 0) == absent]
        return sum(len(p.split()) == 2 for p in named) / len(named)

    assert bare_share(1.0) == 1.0 and bare_share(0.0) == 0.0
    assert 0.5 < bare_share(0.6) < 0.7 and 0.25 < bare_share(None) < 0.42  # ±3.5 binomial σ at ~240 phrases
    # absent kinds (~60 phrases) keep the default mix unless their own share is set
    assert 0.15 < bare_share(1.0, absent=True) < 0.55
    assert bare_share(0.0, 1.0, absent=True) == 1.0 and bare_share(1.0, 0.0, absent=True) == 0.0
    assert bare_share(0.6, 1.0) == bare_share(0.6)  # and they leave present objects' names alone
    with pytest.raises(RegionEditError, match="bare_share is a probability"):
        SegmentStream(None, 8, bare_share=1.5)
    with pytest.raises(RegionEditError, match="absent_bare_share is a probability"):
        SegmentStream(None, 8, absent_bare_share=-0.1)


def test_empty_mask_peak_loss_punishes_the_brightest_pixel_of_empty_masks_only():
    import torch.nn.functional as F

    from regionedit.toyworld.training import empty_mask_peak_loss

    logits = torch.full((3, 8, 8), -6.0)
    masks = torch.zeros(3, 8, 8)
    masks[0, :2, :2] = 1  # a present object: not this term's business, however bright its scores
    logits[0] = 9.0
    logits[1, 3, 3] = 2.0  # one bright pixel in an absent object's mask
    expected = (F.softplus(torch.tensor(2.0)) + F.softplus(torch.tensor(-6.0))) / 3
    assert float(empty_mask_peak_loss(logits, masks)) == pytest.approx(float(expected), rel=1e-6)
    logits.requires_grad_(True)
    empty_mask_peak_loss(logits, masks).backward()
    assert logits.grad[1].count_nonzero() == 1 and logits.grad[1, 3, 3] > 0 and logits.grad[0].count_nonzero() == 0
    assert float(empty_mask_peak_loss(torch.zeros(1, 4, 4), torch.ones(1, 4, 4))) == 0.0


def test_vae_scaling_factor_gives_unit_latents():
    from regionedit.toyworld import latent

    vae = latent.toy_autoencoder().eval()
    factor = latent.set_scaling_factor(vae, count=64, batch=32)
    assert vae.config.scaling_factor == pytest.approx(factor, rel=1e-4)
    stream = latent.WorldImages(32, seed=7)
    with torch.no_grad():
        z = torch.cat([vae.encode(stream.materialise(stream.make(b), "cpu")).latent_dist.mode() for b in range(2)])
    assert float((z * factor).std()) == pytest.approx(1.0, rel=1e-3)


def test_decoder_only_tuning_keeps_the_latents(tmp_path):
    from diffusers import AutoencoderKL

    weights = tmp_path / "w"
    assert main(["toyworld", "train", "scenes-vae", "--smoke", "--weights", str(weights), "-q"]) == 0
    before = AutoencoderKL.from_pretrained(weights / "scenes-vae")
    assert main(["toyworld", "train", "scenes-vae", "--decoder-only", "--smoke", "--weights", str(weights), "-q"]) == 2
    assert main(["toyworld", "train", "scenes-vae", "--resume", "--decoder-only", "--smoke", "--weights", str(weights),
                 "-q"]) == 0
    after = AutoencoderKL.from_pretrained(weights / "scenes-vae")
    assert after.config.scaling_factor == before.config.scaling_factor
    for part in ("encoder", "quant_conv"):
        old, new = getattr(before, part).state_dict(), getattr(after, part).state_dict()
        assert all(torch.equal(old[k], new[k]) for k in old), part
    old, new = before.decoder.state_dict(), after.decoder.state_dict()
    assert any(not torch.equal(old[k], new[k]) for k in old)
    card = json.loads((weights / "scenes-vae" / "card.json").read_text())
    assert card["reproduce"].endswith(" && regionedit toyworld train scenes-vae --steps 2 --batch 4 --decoder-only --resume")


def test_clipseg_evaluation_scores_each_phrase_style_apart():
    from regionedit.toyworld import scenes as scenes_world
    from regionedit.toyworld.evaluation import eval_clipseg
    from regionedit.toyworld.splits import split_seeds
    from regionedit.toyworld.streams import object_phrases, phrase_masks

    count = 40
    scenes = scenes_world.generate_scenes(split_seeds("validation", count))
    phrases, slots = object_phrases(scenes.params, torch.Generator().manual_seed(0))
    truth = phrase_masks(scenes.labels, torch.tensor(slots))

    class KnowsColouredPhrasesOnly:  # the exact mask for "a red ball", nothing for "the ball"
        calls = 0

        def scores(self, image, phrase):
            i, self.calls = self.calls, self.calls + 1
            assert phrase == phrases[i] and torch.equal(image, scenes.images[i : i + 1])
            return truth[i][None, None] * (255.0 if len(phrase.split()) == 3 else 0.0)

    figures = eval_clipseg(KnowsColouredPhrasesOnly(), count, split="validation")
    assert figures["mean_iou_by_style"] == {"bare": 0.0, "coloured": 1.0}
    present = [p for p, s in zip(phrases, slots, strict=True) if s >= 0]
    assert figures["mean_iou"] == round(sum(len(p.split()) == 3 for p in present) / len(present), 4)
    assert figures["absent_empty_share"] == 1.0 and figures["count"] == len(present)


def test_kind_maps_give_each_visible_object_pixel_its_kind():
    from regionedit.toyworld import scenes as scenes_world
    from regionedit.toyworld.splits import split_seeds
    from regionedit.toyworld.streams import kind_maps

    scenes = scenes_world.generate_scenes(split_seeds("validation", 12))
    kinds = kind_maps(scenes.labels, scenes.params["kind"])
    assert torch.equal(kinds > 0, scenes.labels >= 2)  # objects only; sky and ground are 0
    for i in range(12):
        for obj in scenes_world.scene_objects(scenes.params, i):
            visible = scenes.labels[i] == 2 + obj["slot"]
            assert (kinds[i][visible] == 1 + scenes_world.KINDS.index(obj["kind"])).all()


def test_the_kind_head_scores_objectness_everywhere_and_kinds_on_object_patches():
    from transformers import CLIPSegForImageSegmentation

    from regionedit.toyworld.training import KindHead

    clip = models.clip_config(models.toy_tokenizer())
    head = KindHead(CLIPSegForImageSegmentation(models.clipseg_config(clip)))
    kinds = torch.zeros(1, 64, 64, dtype=torch.long)
    kinds[0, :4, :2] = 3  # the first 4-px patch: half kind 3 (index 2), half no object: an object patch
    kinds[0, 4:7, :1] = 2  # 3 of the 16 pixels of the patch below it: under a quarter, a no-object patch
    hidden = torch.zeros(1, 1 + 256, clip.vision_config.hidden_size)
    with torch.no_grad():
        head.head.weight.zero_()
        head.head.bias.zero_()
    log2, log6 = torch.log(torch.tensor(2.0)), torch.log(torch.tensor(6.0))
    assert torch.isclose(head.loss(hidden, kinds), log2 + log6)  # no knowledge: objectness log 2, kind log 6
    with torch.no_grad():
        head.head.bias[0] = 20.0  # "no object" everywhere: right for 255 patches, wrong (20 nats) for the first
    assert torch.isclose(head.loss(hidden, kinds), 20.0 / 256 + log6, rtol=1e-3)
    with torch.no_grad():
        head.head.bias[3] = 20.0  # and kind index 2 on object patches: the kind term vanishes
    assert torch.isclose(head.loss(hidden, kinds), torch.tensor(20.0 / 256), rtol=1e-3)
    with pytest.raises(ValueError, match="patch tokens"):
        head.loss(hidden[:, :100], kinds)


def test_kind_pretraining_trains_the_vision_tower_alone(trained, tmp_path):
    import shutil

    from transformers import CLIPSegForImageSegmentation

    shutil.copytree(trained / "scenes-clip", tmp_path / "scenes-clip")
    args = ["toyworld", "train", "scenes-clipseg", "--smoke", "--weights", str(tmp_path), "-q", "--no-evaluate"]
    assert main(["toyworld", "train", "scenes-vae", "--smoke", "--weights", str(tmp_path), "-q", "--kind-pretraining"]) == 2
    assert main(args) == 0
    before = CLIPSegForImageSegmentation.from_pretrained(tmp_path / "scenes-clipseg").state_dict()
    assert main([*args, "--kind-pretraining", "--resume"]) == 0
    after = CLIPSegForImageSegmentation.from_pretrained(tmp_path / "scenes-clipseg").state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith("clip.vision_model.") for key in changed)
    assert any(key.startswith("clip.vision_model.encoder.layers.3.") for key in changed)
    card = json.loads((tmp_path / "scenes-clipseg" / "card.json").read_text())
    assert card["reproduce"].endswith("--kind-pretraining --resume")
    assert "dense kind task" in card["settings"]["data"]


def test_clipseg_trains_with_the_kind_loss_only_beside_a_tuned_vision_tower(trained, tmp_path):
    import shutil

    from transformers import CLIPSegForImageSegmentation

    shutil.copytree(trained / "scenes-clip", tmp_path / "scenes-clip")
    args = ["toyworld", "train", "scenes-clipseg", "--smoke", "--weights", str(tmp_path), "-q"]
    assert main([*args, "--kind-weight", "1"]) == 2  # the vision tower must be tuned
    assert main([*args, "--bare-share", "2"]) == 2  # a probability
    assert main([*args, "--absent-bare-share", "-1"]) == 2
    assert main([*args, "--kind-weight", "1", "--tune-vision", "--bare-share", "0.6", "--absent-bare-share", "0.5"]) == 0
    card = json.loads((tmp_path / "scenes-clipseg" / "card.json").read_text())
    assert card["reproduce"].endswith("--dice-weight 1 --kind-weight 1 --bare-share 0.6 --absent-bare-share 0.5 --tune-vision")
    assert "bare kind 60% of the time" in card["settings"]["data"]
    assert "absent kinds named bare 50% of the time" in card["settings"]["data"]
    assert "per-patch kind loss" in card["settings"]["data"]
    # the head is not part of the saved segmenter: the folder loads as a plain CLIPSeg, no key left over
    _, info = CLIPSegForImageSegmentation.from_pretrained(tmp_path / "scenes-clipseg", output_loading_info=True)
    assert not info["unexpected_keys"] and not [k for k in info["missing_keys"] if "position_ids" not in k]


def test_shipping_stores_the_clipseg_text_tower_and_the_remove_model_once(trained, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from regionedit.errors import RegionEditError
    from regionedit.models import stored_once
    from regionedit.toyworld.train import ship

    weights = tmp_path / "weights"
    shutil.copytree(trained, weights, symlinks=True)
    before = {name: weights_size_mb(weights / name) for name in ("scenes-clipseg", "scenes-instruct-remove")}
    source_files = {p: p.read_bytes() for p in (trained / "scenes-clipseg").iterdir()}
    for name in ("scenes-clipseg", "scenes-instruct-remove"):
        assert main(["toyworld", "ship", name, str(trained / name), "--weights", str(weights), "-q"]) == 0
    assert {p: p.read_bytes() for p in (trained / "scenes-clipseg").iterdir()} == source_files  # source untouched
    assert json.loads((weights / "scenes-clipseg" / "card.json").read_text()) == json.loads((trained / "scenes-clipseg" / "card.json").read_text())

    # CLIPSeg: the text tower is read from scenes-clip, bit for bit; nothing else changes
    own = load_file(weights / "scenes-clipseg" / "model.safetensors")
    assert not any(name.startswith(("clip.text_model.", "clip.text_projection.")) for name in own)
    assert weights_size_mb(weights / "scenes-clipseg") < before["scenes-clipseg"] - 0.1
    shipped, original = load_segmenter(str(weights / "scenes-clipseg")), load_segmenter(str(trained / "scenes-clipseg"))
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shipped.scores(image, "the red ball"), original.scores(image, "the red ball"))

    # the remove model: the instruct model's weights plus an int8 difference, within half a quantisation step
    assert 0.4 < weights_size_mb(weights / "scenes-instruct-remove" / "unet") / before["scenes-instruct-remove"] < 0.6
    full = load_model(str(trained / "scenes-instruct-remove"), device="cpu", dtype=torch.float32).unet.state_dict()
    stored = load_model(str(weights / "scenes-instruct-remove"), device="cpu", dtype=torch.float32).unet.state_dict()
    base = load_model(str(weights / "scenes-instruct"), device="cpu", dtype=torch.float32).unet.state_dict()
    for name, tensor in full.items():
        change = (tensor - base[name]).abs()
        step = change.reshape(len(change), -1).amax(1) / 127 if tensor.dim() >= 2 else torch.zeros(1)
        # half a step of the int8 grid, plus the fp16 rounding of the result
        bound = step.view(-1, *[1] * (tensor.dim() - 1)) / 2 + tensor.abs() * 2**-10 + 1e-7
        assert ((stored[name] - tensor).abs() <= bound).all(), name
    assert any(not torch.equal(stored[name], base[name]) for name in full)

    # a folder trained on (resumed) from the shipped one gets its full weights back
    assert main(["toyworld", "train", "scenes-clipseg", "--resume", "--smoke", "--weights", str(weights), "-q"]) == 0
    assert not stored_once.stores_once(weights / "scenes-clipseg")
    assert any(name.startswith("clip.text_model.") for name in load_file(weights / "scenes-clipseg" / "model.safetensors"))

    # refused: a text tower that was tuned (not the base's), a folder already stored once, an unknown name
    tuned = tmp_path / "tuned"
    shutil.copytree(trained / "scenes-clipseg", tuned)
    tensors = load_file(tuned / "model.safetensors")
    tensors["clip.text_model.final_layer_norm.bias"] = tensors["clip.text_model.final_layer_norm.bias"] + 1
    from safetensors.torch import save_file
    save_file(tensors, tuned / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RegionEditError, match="differs"):
        ship("scenes-clipseg", tuned, weights=weights)
    assert main(["toyworld", "ship", "scenes-instruct-remove", str(weights / "scenes-instruct-remove"), "--weights", str(tmp_path / "w2"), "-q"]) == 2
    assert main(["toyworld", "ship", "no-such-model", str(tuned), "--weights", str(weights), "-q"]) == 2
