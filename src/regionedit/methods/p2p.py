"""Prompt-to-Prompt (Hertz et al., ICLR 2023) in the edit-friendly DDPM noise space, and on DDIM.

Input: an inversion of the image made with the source prompt P and source CFG (edit-friendly:
x_t path and noise maps z_t; or a DDIM inversion), a target prompt P*. Defaults are those of the
edit-friendly paper's released code for its P2P variant: 100 steps, skip 12, CFG 3.5 (source,
the inversion's) / 9 (target), cross-attention edited for 60 % and self-attention for 20 % of
the steps (DDIM variant: skip 0, 80 % / 40 %).

1. Cross-attention edit of the target row: **replace** (M* ← M) when P and P* have the same
   number of tokens, otherwise **refine**: align the tokens of P* to those of P and take
   M*[:, j] ← M[:, a(j)] for every aligned token j, new words keeping their own attention.
   Optional **re-weighting**: multiply the edited maps of chosen words of P* by a scale.
2. x^src = x^tgt = x at step ``skip``. For each remaining step i, one UNet call on the rows
   [uncond tgt, text src, text tgt]:
   a. every cross-attention layer of the target's text row uses the edited maps while i is in
      the cross window;
   b. every self-attention layer with ≤ 16² queries of the target's text row uses the source's
      probabilities while i is in the self window (self-attention injection);
   c. ε̂ = ε̂_u + w (ε̂_c − ε̂_u) with w = 9 for the target;
   d. x^tgt ← μ_i(x^tgt, ε̂) + σ_i z_i, with the stored map z_i, and x^src ← the stored x at the
      next step (the source branch of the edit-friendly space *is* the input's path);
   e. **local blending** by words W: α = the maps of W (source words in the source row, target
      words in the target row), summed over the steps so far and averaged over the layers at
      1/32 of the image size, 3×3 max-pooled, resized to the sample, rescaled to [0, 1] by their
      minimum and maximum, > 0.3, union of both rows; x^tgt ← x^src + α (x^tgt − x^src).
3. Decode x^tgt (the edit) and x^src (the input).

Where we differ from the released code (P2P's, as used by the edit-friendly code):
- the source branch is read from the inversion instead of being sampled (``source_branch =
  "stored"``, the default for edit-friendly inversions): the stored maps reproduce the input's
  x_t path exactly (``source_branch="sampled"`` runs that branch and the tests check it does), so
  its unconditional row is never computed, and neither is its text row on steps where no
  attention edit or blending needs it. ``"sampled"`` is the code's 4-row batch [uncond src,
  uncond tgt, text src, text tgt] and the only choice for a DDIM inversion;
- replace vs refine is chosen by token count (the edit-friendly code compares word counts), and
  replace maps token j to token j (P2P's replacement mapper for same-length prompts);
- refine aligns the token sequences by longest common subsequence: the code's Needleman–Wunsch
  score (match 1, mismatch −1, gap 0) has the same optimum, though ties may resolve differently;
  the target's padding tokens take the attention of the source's padding tokens in order (the
  code: of the source token at the same index, which may be a word when P is longer);
- one step window for all words (the code also allows a window per word); windows are fractions
  of the schedule's step count, counted from the first step that runs, as in the released code
  (60 % of 100 steps = the first 60 of the 88 steps after skip 12);
- self-attention injection is limited to layers with ≤ 256 queries like the code (16² at SD's
  512²) — ``self_max_tokens`` changes that; local blending uses the layers at 1/32 of the image
  size (SD: the 16² ones, as the code) but at least 8² (``BLEND_MIN_CELLS``: at the toy scenes'
  64², 1/32 would be 2², and the UNet's coarsest 4² maps, 3×3-pooled, covered whole images), or,
  where a UNet has none, its coarsest cross-attention;
- the blend maps are rescaled by their range, (m − min) / (max − min), where the code divides by
  the maximum alone: the same where a word's attention falls to ~0 away from its object (SD), but
  the toy text-to-image model's word maps never fall below ~40 % of their peak, so the code's
  threshold 0.3 selected every cell of every validation edit (and LocalBlend did nothing);
- the attention of the unconditional rows is never edited (as in the code);
- when the inversion recorded its source attention (``invert(..., record_attention=True)``, what
  :class:`~regionedit.editors.DDPMEditor` does for a P2P edit), the source text row is not computed
  at all: the inversion evaluated the UNet at the same x_t, timestep and source prompt, so its maps
  are the ones that row would give (to float rounding), and each step runs the plain edit's rows
  [uncond tgt, text tgt].
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from regionedit import __version__, defaults
from regionedit.core.attention import (
    SELF_MAX_TOKENS,
    AttentionControl,
    RunningMaps,
    SourceAttention,
    attention_layers,
    controlled_attention,
    cross_attention_layers,
    layers_at_resolution,
    mean_maps,
    self_attention_layers,
)
from regionedit.core.inversion import DDPMInversion
from regionedit.core.sampling import stored_noise
from regionedit.errors import RegionEditError
from regionedit.images import from_model_range, tensor_to_pil
from regionedit.mask_sources import MaskResult, as_source, resolve_source
from regionedit.masks import check_region, pad_to, resize
from regionedit.methods.ddpm_edit import decoded, to_image
from regionedit.models.backend import DiffusionModel

DEFAULT_SKIP = defaults.P2P_SKIP
DEFAULT_TARGET_GUIDANCE = defaults.P2P_TARGET_GUIDANCE
DEFAULT_CROSS_REPLACE = defaults.P2P_CROSS_REPLACE
DEFAULT_SELF_REPLACE = defaults.P2P_SELF_REPLACE
DDIM_SKIP, DDIM_CROSS_REPLACE, DDIM_SELF_REPLACE = (defaults.P2P_DDIM_SKIP, defaults.P2P_DDIM_CROSS_REPLACE,
                                                    defaults.P2P_DDIM_SELF_REPLACE)
DEFAULT_BLEND_THRESHOLD = defaults.P2P_BLEND_THRESHOLD
BLEND_MIN_CELLS = 8  # local blending reads maps of at least 8×8 cells
SOURCE_BRANCHES = ("stored", "sampled")

Window = float | tuple[float, float]


@dataclass
class P2PEditOutput:
    image: Image.Image  # the edit
    sample: torch.Tensor  # its x0 (latents for latent models)
    source_image: Image.Image  # the source branch: the input, decoded
    source_sample: torch.Tensor
    mode: str  # "replace" or "refine"
    blend_mask: torch.Tensor | None  # 1×1×h×w at the sample's size, 1 = may change (the last step's)
    recipe: dict
    pixels: torch.Tensor | None = None  # 1×3×H×W in [0, 1]: the edit before 8-bit rounding


# ------------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class TokenMap:
    """Where each target token takes its cross-attention from."""

    mode: str  # "replace" (same token count) or "refine"
    source_index: torch.Tensor  # (L,) long: the source token of each target token
    keep: torch.Tensor  # (L,) float: 1 = takes the source's attention, 0 = a new token (its own)


def prompt_tokens(model: DiffusionModel, prompt: str) -> list[int]:
    """Token ids of ``prompt`` with BOS and EOS, without padding (truncated like the encoder's input)."""
    tokenizer = model.tokenizer
    return tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids


def lcs_alignment(source: Sequence[int], target: Sequence[int]) -> list[int | None]:
    """For each target token, the index of the source token it is aligned with, or None (new)."""
    n, m = len(source), len(target)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = best[i + 1][j + 1] + 1 if source[i] == target[j] else max(best[i + 1][j], best[i][j + 1])
    aligned: list[int | None] = [None] * m
    i = j = 0
    while i < n and j < m:
        if source[i] == target[j]:
            aligned[j] = i
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return aligned


def token_map(source: Sequence[int], target: Sequence[int], length: int) -> TokenMap:
    """Replace when the token counts agree, refine (LCS alignment) otherwise; padding to ``length``."""
    if len(source) == len(target):
        return TokenMap("replace", torch.arange(length), torch.ones(length))
    aligned = lcs_alignment(source, target)
    index, keep = torch.zeros(length, dtype=torch.long), torch.ones(length)
    for j, i in enumerate(aligned):
        index[j], keep[j] = (0, 0.0) if i is None else (i, 1.0)
    padding = torch.arange(length - len(target))
    index[len(target):] = (len(source) + padding).clamp(max=length - 1)
    return TokenMap("refine", index, keep)


def word_tokens(model: DiffusionModel, prompt: str, word: str) -> list[int]:
    """Positions (BOS = 0) of the tokens of every occurrence of ``word`` in ``prompt``."""
    tokenizer, wanted = model.tokenizer, word.strip().lower().strip(string.punctuation)
    positions, cursor = [], 1
    for piece in prompt.split():
        count = len(tokenizer(piece, add_special_tokens=False).input_ids)
        if piece.lower().strip(string.punctuation) == wanted:
            positions.extend(range(cursor, cursor + count))
        cursor += count
    return [p for p in positions if p < tokenizer.model_max_length - 1]


# ------------------------------------------------------------------------------- attention control
def step_window(window: Window, num_steps: int, what: str) -> range:
    """A fraction f (or a (start, end) pair of fractions) of ``num_steps`` → the steps it covers."""
    start, end = (0.0, window) if isinstance(window, (int, float)) else tuple(window)
    if not (0 <= start <= end <= 1) or any(math.isnan(v) for v in (start, end)):
        raise RegionEditError(f"{what} must be a fraction in [0, 1] (or a pair start ≤ end), got {window!r}")
    return range(int(start * num_steps), int(end * num_steps))


class P2PControl(AttentionControl):
    """Edits the target row's attention from the source row's; records the blend layers' maps.

    The sampler sets ``step`` (steps since the first edited one) and ``branch_rows`` ([source
    text row, target text row] of the current UNet batch, [target text row] when the source's maps
    come from ``recorded``, or None when neither is needed). ``recorded``: the inversion's source
    maps, keyed by schedule step (``offset`` = the first edited step's index).
    """

    edits = True

    def __init__(self, tokens: TokenMap, equalizer: torch.Tensor | None, cross_steps: range, self_steps: range,
                 self_max_tokens: int, blend_layers: Sequence[str] = (), recorded: SourceAttention | None = None,
                 offset: int = 0):
        self.tokens, self.equalizer = tokens, equalizer
        self.cross_steps, self.self_steps, self.self_max_tokens = cross_steps, self_steps, self_max_tokens
        self.running = {name: RunningMaps() for name in blend_layers}
        self.recorded, self.offset = recorded, offset
        self.step = 0
        self.branch_rows: list[int] | None = None

    def needs_source(self) -> bool:
        """Whether this step's UNet batch must hold the source text row (never with recorded maps)."""
        wanted = self.step in self.cross_steps or self.step in self.self_steps or bool(self.running)
        return wanted and self.recorded is None

    def rows(self, name, is_cross, batch, tokens):
        if self.branch_rows is None:
            return None
        if is_cross:
            return self.branch_rows if self.step in self.cross_steps or name in self.running else None
        return self.branch_rows if self.step in self.self_steps and tokens <= self.self_max_tokens else None

    def process(self, name, probs, is_cross):
        if len(probs) == 2:
            source, target = probs[0], probs[1]
        else:  # the target row alone: the source's maps are the inversion's
            source, target = self.recorded.get(self.step + self.offset, name).to(probs), probs[0]
        if not is_cross:
            target = source  # self-attention injection
        elif self.step in self.cross_steps:
            target = self.edit_cross(source, target)
        both = torch.stack([source, target])
        if is_cross and name in self.running:
            self.running[name].add(both)
        return both if len(probs) == 2 else target[None]

    def edit_cross(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """heads × queries × tokens maps of the source and target rows → the target's edited maps."""
        tokens = self.tokens
        if tokens.mode == "replace":
            edited = source
        else:
            keep = tokens.keep.to(source)
            edited = source[..., tokens.source_index.to(source.device)] * keep + target * (1 - keep)
        return edited if self.equalizer is None else edited * self.equalizer.to(edited)

    def blend_mask(self, words: torch.Tensor, latent_size: tuple[int, int], threshold: float) -> torch.Tensor:
        """P2P's LocalBlend: α (1×1×h×w, 0/1) from the recorded maps of the words (``words``: 2×L)."""
        maps = mean_maps([r.total for r in self.running.values()], latent_size)  # 2×L×h'×w'
        word_maps = (maps * words.to(maps)[:, :, None, None]).sum(1, keepdim=True)
        pooled = F.max_pool2d(word_maps, 3, stride=1, padding=1)
        resized = F.interpolate(pooled, size=latent_size, mode="nearest")
        floor, peak = resized.amin(dim=(2, 3), keepdim=True), resized.amax(dim=(2, 3), keepdim=True)
        # a map without contrast localises nothing: like the code's peak threshold, it selects every cell (if any attention)
        mask = torch.where(peak > floor, resized - floor > threshold * (peak - floor), peak > 0)
        return (mask[:1] | mask[1:]).float()


class _Branches:
    """ε̂ of the source and target branches in one UNet call, each with its own guidance scale."""

    def __init__(self, model: DiffusionModel, source_prompt: str, prompt: str, source_guidance: float,
                 guidance: float, control: P2PControl):
        self.model, self.control = model, control
        self.negative = model.encode_prompt("")[:1]
        self.source_text, self.target_text = model.encode_prompt([source_prompt, prompt]).chunk(2)
        self.source_guidance, self.guidance = source_guidance, guidance

    def __call__(self, x_source, x_target, t, layout: str):
        """``layout``: "sampled" [u src, u tgt, c src, c tgt], "stored" [u tgt, c src, c tgt] or
        "target" [u tgt, c tgt]. Returns (ε̂ source or None, ε̂ target)."""
        n, s, g = self.negative, self.source_text, self.target_text
        rows = {"sampled": ([x_source, x_target, x_source, x_target], [n, n, s, g], [2, 3]),
                "stored": ([x_target, x_source, x_target], [n, s, g], [1, 2]),
                "target": ([x_target, x_target], [n, g], [1] if self.control.recorded is not None else None)}
        xs, texts, self.control.branch_rows = rows[layout]
        eps = self.model.unet_eps(torch.cat(xs), t, torch.cat(texts))
        if layout == "sampled":
            u_src, u_tgt, c_src, c_tgt = eps.chunk(4)
            return u_src + self.source_guidance * (c_src - u_src), u_tgt + self.guidance * (c_tgt - u_tgt)
        u_tgt, c_tgt = eps[:1], eps[-1:]
        return None, u_tgt + self.guidance * (c_tgt - u_tgt)


# ------------------------------------------------------------------------------- the edit
def edit(
    model: DiffusionModel,
    inversion: DDPMInversion,
    prompt: str,
    guidance_scale: float = DEFAULT_TARGET_GUIDANCE,
    skip: int | None = None,
    cross_replace: Window | None = None,
    self_replace: Window | None = None,
    reweight: Mapping[str, float] | None = None,
    blend_words: Sequence[str] = (),
    blend_threshold: float = DEFAULT_BLEND_THRESHOLD,
    self_max_tokens: int = SELF_MAX_TOKENS,
    source_branch: str | None = None,
    blend_mask=None,
    image=None,
    progress: bool = True,
) -> P2PEditOutput:
    """Edit the inverted image toward ``prompt`` with Prompt-to-Prompt attention control.

    The source prompt and source CFG are the inversion's. ``skip``, ``cross_replace`` and
    ``self_replace`` default to the released code's (edit-friendly: 12, 0.6, 0.2; DDIM: 0, 0.8,
    0.4); windows are fractions of the schedule's steps, or (start, end) pairs. ``reweight``:
    word of ``prompt`` → scale of its cross-attention. ``blend_words``: words of either prompt
    whose attention delimits the region that may change (local blending). ``blend_mask``: local
    blending from a fixed region instead of words — a tensor at the input's size or any mask source
    (:mod:`regionedit.mask_sources`), resolved on ``image`` (default: the inversion's decoded x0);
    a sample pixel may change when any input pixel it covers is in the mask.
    """
    exact = inversion.is_exact
    skip = (DEFAULT_SKIP if exact else DDIM_SKIP) if skip is None else skip
    cross_replace = (DEFAULT_CROSS_REPLACE if exact else DDIM_CROSS_REPLACE) if cross_replace is None else cross_replace
    self_replace = (DEFAULT_SELF_REPLACE if exact else DDIM_SELF_REPLACE) if self_replace is None else self_replace
    source_branch = source_branch or ("stored" if exact else "sampled")
    _check(model, inversion, prompt, guidance_scale, skip, blend_threshold, self_max_tokens, source_branch)
    steps = inversion.num_inference_steps
    source_prompt = inversion.prompt
    length = model.tokenizer.model_max_length
    tokens = token_map(prompt_tokens(model, source_prompt), prompt_tokens(model, prompt), length)
    equalizer = _equalizer(model, prompt, reweight, length)
    blend_layers, words = _blend(model, inversion, source_prompt, prompt, blend_words, length)
    given, fixed = None, None
    if blend_mask is not None:
        if blend_words:
            raise RegionEditError("local blending takes blend words or a blend mask, not both")
        given, fixed = fixed_blend_mask(model, inversion, blend_mask, image)
    cross_steps, self_steps = step_window(cross_replace, steps, "cross_replace"), step_window(self_replace, steps, "self_replace")
    recorded = _usable_recording(model, inversion, source_branch, skip, cross_steps, self_steps, self_max_tokens,
                                 blend_layers)
    control = P2PControl(tokens, equalizer, cross_steps, self_steps, self_max_tokens, blend_layers, recorded, skip)
    branches = _Branches(model, source_prompt, prompt, inversion.guidance_scale, guidance_scale, control)

    inv = inversion.to(model.device)
    schedule, noise = inv.schedule, stored_noise(inv.zs, inv.noise_scale)
    x_source = x_target = inv.x_at(skip)
    mask = None
    with controlled_attention(model.unet, control, attention_layers(model.unet)):
        for i in tqdm(range(skip, steps), disable=not progress, desc="prompt-to-prompt", leave=False):
            control.step = i - skip
            layout = "sampled" if source_branch == "sampled" else "stored" if control.needs_source() else "target"
            with torch.no_grad():
                eps_source, eps_target = branches(x_source, x_target, schedule.timesteps[i], layout)
            x_target = schedule.mean(i, x_target, eps_target, inv.eta) + noise(i, x_target)
            if source_branch == "sampled":
                x_source = schedule.mean(i, x_source, eps_source, inv.eta) + noise(i, x_source)
            else:
                x_source = inv.x_at(i + 1) if i + 1 < steps else inv.x0
            if words is not None:
                mask = control.blend_mask(words, tuple(x_target.shape[-2:]), blend_threshold)
            elif fixed is not None:
                mask = fixed
            if mask is not None:
                x_target = x_source + mask * (x_target - x_source)

    recipe = {
        "method": "p2p", "version": __version__, "model": model.name, "mode": tokens.mode,
        "source_prompt": source_prompt, "source_guidance_scale": inversion.guidance_scale,
        "target_prompt": prompt, "target_guidance_scale": guidance_scale, "skip": skip,
        "cross_replace": cross_replace, "self_replace": self_replace, "self_max_tokens": self_max_tokens,
        "reweight": dict(reweight or {}), "blend_words": list(blend_words),
        "blend_threshold": blend_threshold if blend_words else None, "source_branch": source_branch,
        "source_attention": "inversion" if recorded is not None else "computed",
        "blend_mask": given.source if given is not None else None,
        "inversion": "ddpm" if exact else "ddim", "num_inference_steps": steps, "eta": inversion.eta,
        "seed": inversion.seed,
    }
    pixels = decoded(model, x_target, inversion)
    return P2PEditOutput(
        image=tensor_to_pil(pixels[0]), sample=x_target,
        source_image=to_image(model, x_source, inversion), source_sample=x_source,
        mode=tokens.mode, blend_mask=mask, recipe=recipe, pixels=from_model_range(pixels),
    )


def _usable_recording(model, inversion, source_branch, skip, cross_steps, self_steps, self_max_tokens,
                      blend_layers) -> SourceAttention | None:
    """The inversion's recorded source maps, if they hold every (step, layer) this edit reads."""
    recorded = inversion.source_attention
    if recorded is None or source_branch != "stored" or self_max_tokens > recorded.self_max_tokens:
        return None
    edited = range(skip, inversion.num_inference_steps)
    cross = list(cross_attention_layers(model.unet))
    cross_steps = edited if blend_layers else [skip + s for s in cross_steps if skip + s in edited]
    self_steps = [skip + s for s in self_steps if skip + s in edited]
    # which self-attention layers are small enough is known only at call time: require every one recorded
    small = [name for name in self_attention_layers(model.unet) if (edited.start, name) in recorded.maps]
    ok = recorded.covers(cross_steps, cross) and recorded.covers(self_steps, small)
    return recorded if ok else None


def fixed_blend_mask(model: DiffusionModel, inversion: DDPMInversion, blend_mask, image=None) -> tuple[MaskResult, torch.Tensor]:
    """A user's blend region → (its resolved mask, α at the sample's size: 1 where any covered
    input pixel is in the region). Resolved on ``image``, or on the inversion's decoded x0."""
    fit = inversion.fit
    if image is None and (getattr(as_source(blend_mask), "needs_pixels", False)):
        pixels = model.decode(inversion.x0.to(model.device))
        image = ((fit.crop(pixels) if fit is not None else pixels) + 1).cpu() / 2
    latent = tuple(inversion.x0.shape[-2:])
    padded = (fit.padded_size[1], fit.padded_size[0]) if fit is not None else tuple(s * model.vae_scale_factor for s in latent)
    working = (fit.working_size[1], fit.working_size[0]) if fit is not None else padded
    size = fit.original_size if fit is not None else (padded[1], padded[0])
    given = resolve_source(blend_mask, image, model, "Prompt-to-Prompt", size=size)
    region = pad_to(resize(given.mask.float().cpu(), working), padded)
    check_region(region, "the blend mask")
    alpha = (F.adaptive_max_pool2d(region, latent) > 0).float()
    return given, alpha.to(model.device)


def _check(model, inversion, prompt, guidance_scale, skip, blend_threshold, self_max_tokens, source_branch) -> None:
    if not model.is_text_conditional or model.is_instruct or model.is_inpainting:
        raise RegionEditError(f"Prompt-to-Prompt needs a text-to-image model; {model.name} is {model.conditioning}")
    if inversion.xts.shape[1] != model.channels:
        raise RegionEditError(f"the inversion has {inversion.xts.shape[1]} channels but model {model.name} diffuses "
                              f"{model.channels}: invert with the same model (it was made with {inversion.model})")
    if inversion.prompt is None:
        raise RegionEditError("the inversion has no source prompt (invert with a prompt, '' for none)")
    if not isinstance(prompt, str):
        raise RegionEditError(f"prompt must be a string, got {prompt!r}")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise RegionEditError(f"guidance_scale must be a finite number ≥ 0, got {guidance_scale}")
    if not 0 <= skip < inversion.num_inference_steps:
        raise RegionEditError(f"skip must be in [0, {inversion.num_inference_steps}), got {skip}")
    if not 0 <= blend_threshold < 1:
        raise RegionEditError(f"blend_threshold must be in [0, 1), got {blend_threshold}")
    if self_max_tokens < 0:
        raise RegionEditError(f"self_max_tokens must be ≥ 0, got {self_max_tokens}")
    if source_branch not in SOURCE_BRANCHES:
        raise RegionEditError(f"source_branch must be one of {SOURCE_BRANCHES}, got {source_branch!r}")
    if source_branch == "stored" and not inversion.is_exact:
        raise RegionEditError("source_branch 'stored' needs an edit-friendly inversion (a DDIM inversion does not "
                              "reproduce its input): use 'sampled'")


def _equalizer(model, prompt: str, reweight: Mapping[str, float] | None, length: int) -> torch.Tensor | None:
    """Scale per target token (1 except the re-weighted words), or None when nothing is re-weighted."""
    if not reweight:
        return None
    equalizer = torch.ones(length)
    for word, scale in reweight.items():
        if not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise RegionEditError(f"re-weighting scale of {word!r} must be a finite number, got {scale!r}")
        positions = word_tokens(model, prompt, word)
        if not positions:
            raise RegionEditError(f"re-weighted word {word!r} is not in the target prompt {prompt!r}")
        equalizer[positions] = float(scale)
    return equalizer


def _blend(model, inversion, source_prompt, prompt, blend_words, length):
    """The blend layers and the 2×L word indicator (source words, target words), or ((), None)."""
    if not blend_words:
        return (), None
    words = torch.zeros(2, length)
    for word in blend_words:
        found = False
        for row, text in enumerate((source_prompt, prompt)):
            positions = word_tokens(model, text, word)
            words[row, positions] = 1.0
            found = found or bool(positions)
        if not found:
            raise RegionEditError(f"blend word {word!r} is in neither prompt ({source_prompt!r}, {prompt!r})")
    latent_size = tuple(inversion.x0.shape[-2:])
    image_size = tuple(s * model.vae_scale_factor for s in latent_size)
    if not cross_attention_layers(model.unet):
        raise RegionEditError(f"model {model.name} has no cross-attention layers to blend by")
    return layers_at_resolution(model.unet, latent_size, image_size, min_cells=BLEND_MIN_CELLS), words
