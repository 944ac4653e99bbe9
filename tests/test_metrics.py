"""Metrics: hand-computed values, exact masking, scikit-image agreement, CLIP, LPIPS without downloads."""

import math

import pytest
import torch
from skimage.metrics import structural_similarity

from regionedit import metrics
from regionedit.errors import RegionEditError


@pytest.fixture
def pair():
    a = torch.zeros(1, 3, 2, 2)
    b = torch.zeros(1, 3, 2, 2)
    b[0, :, 0, 0] = 0.5  # one pixel off by 0.5 in all channels
    b[0, 0, 1, 1] = 0.2  # another off by 0.2 in red only
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # the first pixel is the edited region
    return a, b, mask


def test_hand_computed_values(pair):
    a, b, mask = pair
    assert metrics.l1(a, b).item() == pytest.approx((3 * 0.5 + 0.2) / 12)
    assert metrics.l2(a, b).item() == pytest.approx((3 * 0.25 + 0.04) / 12)
    assert metrics.psnr(a, b).item() == pytest.approx(10 * math.log10(12 / 0.79))
    assert metrics.l1(a, b, mask, "inside").item() == pytest.approx(0.5)
    assert metrics.l1(a, b, mask, "outside").item() == pytest.approx(0.2 / 9)
    assert metrics.l2(a, b, mask, "outside").item() == pytest.approx(0.04 / 9)
    assert metrics.psnr(a, b, mask, "inside").item() == pytest.approx(10 * math.log10(1 / 0.25))
    assert metrics.psnr(a, a).item() == metrics.PSNR_CAP
    assert metrics.mask_iou(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 0, 1, 0]])).item() == pytest.approx(1 / 3)
    assert metrics.mask_iou(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 1.0


def test_masked_metrics_ignore_the_other_region_exactly():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 24, 24, generator=g), torch.rand(2, 3, 24, 24, generator=g)
    mask = torch.zeros(2, 1, 24, 24)
    mask[:, :, 5:15, 8:20] = 1
    scrambled_a, scrambled_b = a.clone(), b.clone()
    scrambled_a[mask.expand_as(a) == 0] = torch.rand(int((mask == 0).sum()) * 3, generator=g)
    scrambled_b[mask.expand_as(b) == 0] = 0.0
    for fn in (metrics.l1, metrics.l2, metrics.psnr, metrics.ssim):
        inside = fn(a, b, mask, "inside")
        assert torch.equal(inside, fn(scrambled_a, scrambled_b, mask, "inside")), fn.__name__
        outside = fn(a, b, mask, "outside")
        inner_a, inner_b = a.clone(), b.clone()
        inner_a[mask.expand_as(a) == 1] = 1.0
        assert torch.equal(outside, fn(inner_a, inner_b, mask, "outside")), fn.__name__


def test_ssim_matches_scikit_image():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 32, 40, generator=g)
    b = (a + 0.1 * torch.randn(2, 3, 32, 40, generator=g)).clamp(0, 1)
    ours = metrics.ssim(a, b)
    for i in range(2):
        reference = structural_similarity(a[i].numpy(), b[i].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0)
        assert ours[i].item() == pytest.approx(float(reference), abs=1e-5)
    assert metrics.ssim(a, a).allclose(torch.ones(2))


def test_bad_metric_inputs():
    a = torch.rand(1, 3, 8, 8)
    with pytest.raises(RegionEditError, match="needs a mask"):
        metrics.l1(a, a, None, "inside")
    with pytest.raises(RegionEditError, match="region must be"):
        metrics.l1(a, a, torch.ones(8, 8), "middle")
    with pytest.raises(RegionEditError, match="differs from image size"):
        metrics.psnr(a, a, torch.ones(4, 4), "inside")
    assert metrics.l1(a, a, torch.zeros(8, 8), "inside").isnan().all()  # empty region


def _tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    from regionedit.models.tokenizer import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    return CLIPModel(config).eval(), tokenizer


def test_clip_scores_over_a_transformers_clip_model():
    model, tokenizer = _tiny_clip()
    scorer = metrics.ClipScorer(model, tokenizer)
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(3, 3, 64, 64, generator=g), torch.rand(3, 3, 64, 64, generator=g)
    assert torch.allclose(scorer.clip_i(a, a), torch.ones(3), atol=1e-5)
    assert torch.allclose(scorer.clip_i(a, b), scorer.clip_i(b, a), atol=1e-6)
    texts = ["a red ball", "a blue box", "a tree"]
    scores = scorer.clip_t(a, texts)
    # The same number through the model's own sub-modules, by hand:
    import torch.nn.functional as F

    pixels = F.interpolate(a, size=(32, 32), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    pixels = (pixels - torch.tensor(metrics.CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(metrics.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        tokens = tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt")
        text = model.text_projection(model.text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).pooler_output)
    expected = F.cosine_similarity(image, text, dim=-1)
    assert torch.allclose(scores, expected, atol=1e-5)
    with pytest.raises(RegionEditError, match="one text per image"):
        scorer.clip_t(a, ["only one"])


def test_structure_distance_compares_last_layer_key_self_similarity():
    import torch.nn.functional as F
    from transformers import ViTConfig, ViTModel

    model, _ = _tiny_clip()
    vision = model.vision_model
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    # zero up to float rounding of one batch's rows (~1e-12 here; real edits measure 0.1 to 100s)
    assert torch.allclose(metrics.structure_distance(vision, a, a), torch.zeros(3), atol=1e-6)
    assert torch.allclose(metrics.structure_distance(vision, a, b), metrics.structure_distance(vision, b, a), rtol=1e-5)
    # by hand: the last layer's keys of every token (CLS included), from its own input
    pixels = metrics.clip_pixels(torch.cat([a, b]), 32)
    with torch.no_grad():
        hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        last = vision.encoder.layers[-1]
        keys = F.normalize(last.self_attn.k_proj(last.layer_norm1(hidden)), dim=-1)
    similarity = keys @ keys.transpose(1, 2)
    expected = ((similarity[:3] - similarity[3:]) ** 2).mean(dim=(1, 2)) * 1e3
    assert torch.allclose(metrics.structure_distance(vision, a, b), expected, rtol=1e-4)
    # any ViT: DINO-style ViTModel names its key projection "key"
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=37), add_pooling_layer=False).eval()
    assert metrics.structure_distance(vit, a, b).gt(0).all()
    with pytest.raises(RegionEditError, match="one shape"):
        metrics.structure_distance(vision, a, b[:2])
    with pytest.raises(RegionEditError, match="not a ViT"):
        metrics.structure_distance(torch.nn.Conv2d(3, 3, 1), a, b, image_size=32)


def test_lpips_never_downloads_and_explains_what_is_missing():
    available, why = metrics.lpips_available()
    if available:
        pytest.skip("LPIPS weights are installed here")
    with pytest.raises(RegionEditError) as info:
        metrics.lpips_distance(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    assert str(info.value) == why and ("optional extra" in why or "not on disk" in why)
