"""One loader for tiny, folder and hub models; offline errors; the offline tokenizer."""

import json
import shutil

import pytest
import torch

from regionedit.errors import RegionEditError
from regionedit.models import load_model, resolve
from regionedit.models.tiny import TINY_BUILDERS, save_tiny, tiny_pixel_ddpm, tiny_sd
from regionedit.models.tokenizer import build_clip_tokenizer


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


DIFFUSION_TINY = sorted(n for n in TINY_BUILDERS if n not in ("tiny/clip", "tiny/clipseg", "tiny/sam"))


@pytest.mark.parametrize("name", DIFFUSION_TINY)
def test_tiny_models_round_trip_through_the_loader(name, tmp_path):
    built = TINY_BUILDERS[name]()
    folder = save_tiny(built, tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"][1] == type(built["unet"]).__name__
    assert list(folder.glob("unet/*.safetensors")) and not list(folder.rglob("*.bin"))
    loaded = load_model(str(folder), device="cpu")
    assert state_equal(loaded.unet, built["unet"])
    if "vae" in built:
        assert state_equal(loaded.vae, built["vae"]) and state_equal(loaded.text_encoder, built["text_encoder"])
        assert loaded.tokenizer("a red ball").input_ids == built["tokenizer"]("a red ball").input_ids
    by_name = load_model(name, device="cpu")  # the cached copy built by the loader itself
    assert state_equal(by_name.unet, built["unet"])


def test_builders_are_deterministic_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = tiny_pixel_ddpm(seed=5)
    assert torch.equal(torch.rand(1), before)
    assert state_equal(a["unet"], tiny_pixel_ddpm(seed=5)["unet"])
    assert not state_equal(a["unet"], tiny_pixel_ddpm(seed=6)["unet"])


def test_old_root_level_layout_loads(tmp_path):
    """google/ddpm-* repos keep config.json and scheduler_config.json at the root."""
    built = tiny_pixel_ddpm()
    built["unet"].save_pretrained(tmp_path)
    built["scheduler"].save_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]}))
    model = load_model(str(tmp_path), device="cpu")
    assert state_equal(model.unet, built["unet"])
    assert model.conditioning == "none"


def test_pickle_weights_need_allow_pickle(tmp_path):
    built = tiny_pixel_ddpm()
    folder = save_tiny(built, tmp_path / "m")
    built["unet"].save_pretrained(folder / "unet", safe_serialization=False)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(RegionEditError, match="--allow-pickle"):
        load_model(str(folder), device="cpu")
    assert state_equal(load_model(str(folder), device="cpu", allow_pickle=True).unet, built["unet"])


def test_unknown_hub_id_offline_is_one_clear_line():
    with pytest.raises(RegionEditError) as info:
        load_model("nobody/no-such-model", device="cpu")
    message = str(info.value)
    assert "nobody/no-such-model" in message and "offline" in message and "\n" not in message


def test_bad_names(tmp_path):
    with pytest.raises(RegionEditError, match="unknown embedded model"):
        resolve("toy/no-such-thing")
    with pytest.raises(RegionEditError, match="unknown tiny model"):
        resolve("tiny/giant")
    with pytest.raises(RegionEditError, match="neither a folder"):
        resolve("not a model id")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegionEditError, match="not a diffusers model"):
        load_model(str(tmp_path / "empty"), device="cpu")
    broken = save_tiny(tiny_sd(), tmp_path / "broken")
    shutil.rmtree(broken / "vae")
    with pytest.raises(RegionEditError, match="cannot load model"):
        load_model(str(broken), device="cpu")


def test_offline_tokenizer_known_words_and_unknown_path(tmp_path):
    tokenizer = build_clip_tokenizer(["ball", "blue", "box"])
    assert tokenizer.tokenize("a Blue BALL") == ["a</w>", "blue</w>", "ball</w>"]
    assert tokenizer.tokenize("zebra!") == ["z", "e", "b", "r", "a</w>", "!</w>"]
    ids = tokenizer("blue ball", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id and ids[3] == tokenizer.eos_token_id
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.model_max_length == 77 and again("blue ball").input_ids == tokenizer("blue ball").input_ids


@pytest.mark.parametrize("name", ["tiny/clip", "tiny/clipseg"])
def test_tiny_clip_and_segmenter_round_trip(name, tmp_path):
    from transformers import CLIPModel, CLIPSegForImageSegmentation

    from regionedit.models.loading import load_transformers

    built = TINY_BUILDERS[name]()
    folder = save_tiny(built, tmp_path / "m")
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
    model_class = CLIPModel if name == "tiny/clip" else CLIPSegForImageSegmentation
    model, tokenizer = load_transformers(str(folder), model_class, "cpu")
    assert state_equal(model, built["model"]) and tokenizer("a ball").input_ids == built["tokenizer"]("a ball").input_ids
    with pytest.raises(RegionEditError, match="not available offline"):
        load_transformers("someone/missing-clip", model_class, "cpu")
