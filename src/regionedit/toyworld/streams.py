"""The toy-world models' training streams: endless batches of fresh train-split renders.

A stream has two halves. Its CPU half (:meth:`Stream.make`: parameters, edit plans, token ids;
per-item Python) runs in DataLoader workers; its device half (:meth:`Stream.materialise`:
rendering, text encoding) runs in the trainer, on the GPU when there is one. Batch ``b`` always
holds train-split seeds ``[b·B, (b+1)·B)``, whatever the number of workers; the benchmark split is
never seen. A :class:`Pool` reuses materialised batches to spend less time rendering.

- :class:`FaceStream`: faces for the pixel DDPM;
- :class:`ClipStream`: (scene, caption) pairs for the contrastive loss;
- :class:`SegmentStream`: (scene, object phrase) → the phrase's visible mask, for CLIPSeg.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from regionedit.errors import RegionEditError
from regionedit.images import to_model_range
from regionedit.metrics import clip_pixels
from regionedit.toyworld import faces as faces_world
from regionedit.toyworld import scenes as scenes_world
from regionedit.toyworld.architectures import TEXT_LENGTH
from regionedit.toyworld.splits import split_seeds


@dataclass
class DiffusionBatch:
    x0: torch.Tensor  # B×3×64×64 in [-1, 1]
    text: torch.Tensor | None = None  # B×L×D text states
    source: torch.Tensor | None = None  # B×3×64×64 source image (instruct models)


class Stream(IterableDataset):
    """Endless training batches: :meth:`make` (CPU, in workers) then :meth:`materialise` (device)."""

    def __init__(self, batch: int, seed: int = 0):
        self.batch, self.seed = batch, seed

    def seeds(self, b: int) -> list[int]:
        return split_seeds("train", self.batch, b * self.batch)

    def generator(self, b: int) -> torch.Generator:
        """Randomness of batch b that is not the scene's (dropout, phrase choice): a function of (seed, b)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + b)

    def __iter__(self):
        info = get_worker_info()
        b, stride = (info.id, info.num_workers) if info else (0, 1)
        while True:
            yield self.make(b)
            b += stride

    def make(self, b: int) -> dict:
        raise NotImplementedError

    def materialise(self, item: dict, device) -> object:
        raise NotImplementedError


def batches(stream: Stream, device, workers: int = 0) -> Iterator:
    """Materialised batches of ``stream`` in order; CPU halves in ``workers`` spawned processes."""
    on_gpu = torch.device(device).type == "cuda"
    loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=on_gpu,
                        multiprocessing_context="spawn" if workers else None, prefetch_factor=4 if workers else None,
                        persistent_workers=bool(workers), worker_init_fn=_one_thread if workers else None)
    for item in loader:
        yield stream.materialise(item, device)


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # several trainers share the machine's cores


class Pool:
    """A refreshing pool of materialised diffusion batches on the device: every batch is drawn from
    ``size`` examples, and every ``refresh_every`` steps one fresh stream batch overwrites random
    slots, so rendering costs 1/``refresh_every`` of a batch per step and each example is seen
    about ``refresh_every`` times. Draws come from a seeded generator: the run is repeatable."""

    def __init__(self, data: Iterator[DiffusionBatch], batch: int, size: int, refresh_every: int, seed: int = 0):
        first = [next(data) for _ in range(-(-size // batch))]
        self.kind = type(first[0])  # DiffusionBatch or a subclass with more fields (the latent pools')
        self.fields = {name: torch.cat([getattr(b, name) for b in first])[:size].half()
                       for name in first[0].__dict__ if getattr(first[0], name) is not None}
        self.data, self.batch, self.size, self.refresh_every, self.step = data, batch, size, refresh_every, 0
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        return self

    def __next__(self) -> DiffusionBatch:
        if self.step and self.step % self.refresh_every == 0:
            fresh = next(self.data)
            slots = torch.randperm(self.size, generator=self.generator)[: len(fresh.x0)]
            for name, values in self.fields.items():
                values[slots.to(values.device)] = getattr(fresh, name).half()
        self.step += 1
        pick = torch.randint(self.size, (self.batch,), generator=self.generator)
        return self.kind(**{name: values[pick.to(values.device)].float() for name, values in self.fields.items()})


def token_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids padded to TEXT_LENGTH with end-of-text, as the backend's ``encode_prompt`` pads."""
    return tokenizer(texts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt").input_ids


def drop(texts: list[str], probability: float, generator: torch.Generator) -> list[str]:
    keep = torch.rand(len(texts), generator=generator) >= probability
    return [t if k else "" for t, k in zip(texts, keep.tolist(), strict=True)]


def render_scene_images(params: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    scenes = scenes_world.render(params, device=device)
    return scenes.images, scenes.labels


class FaceStream(Stream):
    def make(self, b):
        return {"factors": faces_world.sample_factors(self.seeds(b))}

    def materialise(self, item, device):
        return DiffusionBatch(to_model_range(faces_world.render(item["factors"], device=device).images))


class TextEncoding:
    """The frozen text encoder's states for token ids (the diffusion streams' device half)."""

    def __init__(self, text_encoder):
        self.text_encoder = text_encoder

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, device) -> torch.Tensor:
        return self.text_encoder(ids.to(device))[0].float()


class ClipStream(Stream):
    """(scene, caption) pairs for the contrastive loss."""

    def __init__(self, tokenizer, batch: int, seed: int = 0):
        super().__init__(batch, seed)
        self.tokenizer = tokenizer

    def make(self, b):
        params = scenes_world.sample_params(self.seeds(b))
        captions = [scenes_world.scene_caption(params, i) for i in range(self.batch)]
        return {"params": params, "ids": token_ids(self.tokenizer, captions)}

    def materialise(self, item, device):
        images, _ = render_scene_images(item["params"], device)
        return clip_pixels(images, 64), item["ids"].to(device)


def object_phrases(params: dict, generator: torch.Generator, coloured_absent: bool = False,
                   bare_share: float | None = None, absent_bare_share: float | None = None) -> tuple[list[str], list[int]]:
    """One phrase per scene naming an object ("the ball", "a red ball", "the red ball") or, one time
    in five, a kind that is absent; and the named object's slot (−1: absent, an empty mask).
    ``coloured_absent`` (training): absent kinds are named in all three styles, with a random colour,
    not only as "the ball"; otherwise a segmenter learns that a bare kind means an empty mask, and
    leaves present objects named that way empty too (bench/results/clipseg-ablation-absent-cpu.json).
    ``bare_share`` (training): the probability that a present object is named by its bare kind
    ("the ball", which only its shape answers); default: each style a third of the time.
    ``absent_bare_share`` (training, with ``coloured_absent``): the same for an absent kind; raising
    ``bare_share`` alone makes a bare phrase mean "present" more often, and the segmenter then fills
    the masks of bare absent kinds, the benchmark's style (bench/results/clipseg-ablation-bare-share-cpu.json)."""
    phrases, slots = [], []
    for i in range(params["ground"].shape[0]):
        objects = scenes_world.scene_objects(params, i)
        absent = [k for k in scenes_world.KINDS if k not in {o["kind"] for o in objects}]
        if not objects or (absent and torch.rand(1, generator=generator).item() < 0.2):
            kind = absent[int(torch.randint(len(absent), (1,), generator=generator))]
            colour = scenes_world.COLOURS[int(torch.randint(len(scenes_world.COLOURS), (1,), generator=generator))] \
                if coloured_absent else None
            phrases.append(_phrase(kind, colour, _style(generator, absent_bare_share) if coloured_absent else 0))
            slots.append(-1)
            continue
        obj = objects[int(torch.randint(len(objects), (1,), generator=generator))]
        phrases.append(_phrase(obj["kind"], obj["colour"], _style(generator, bare_share)))
        slots.append(obj["slot"])
    return phrases, slots


def _style(generator: torch.Generator, bare_share: float | None) -> int:
    if bare_share is None:
        return int(torch.randint(3, (1,), generator=generator))
    if torch.rand(1, generator=generator).item() < bare_share:
        return 0
    return 1 + int(torch.randint(2, (1,), generator=generator))


def _phrase(kind: str, colour: str | None, style: int) -> str:
    """Style 0: "the ball"; 1: "a red ball"; 2: "the red ball"."""
    if style == 0:
        return f"the {kind}"
    return f"{scenes_world.article(colour) if style == 1 else 'the'} {colour} {kind}"


def phrase_masks(labels: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """B×H×W visible masks of each scene's named slot (empty where the slot is −1)."""
    return (labels == (2 + slots.to(labels.device)).view(-1, 1, 1)).float() * (slots.to(labels.device) >= 0).view(-1, 1, 1)


class SegmentStream(Stream):
    """(scene, object phrase) → the object's visible mask; absent kinds as negatives.

    ``batch`` (scene, phrase) examples per step. ``phrases_per_scene`` K: they come from batch / K
    scenes, each named by K phrases drawn independently (so each phrase is drawn as with K = 1),
    phrase k of scene s at row s·K + k. A batch is (pixels of the batch / K scenes, batch phrase ids,
    batch masks, the scenes' kind maps: per pixel 0 where no object shows, else 1 + its kind's index
    in ``KINDS``). The vision tower then runs once per scene (see ``clipseg_logits``). ``bare_share``,
    ``absent_bare_share``: as :func:`object_phrases`."""

    def __init__(self, tokenizer, batch: int, seed: int = 0, phrases_per_scene: int = 1, bare_share: float | None = None,
                 absent_bare_share: float | None = None):
        if phrases_per_scene < 1 or batch % phrases_per_scene:
            raise RegionEditError(f"the batch ({batch}) must be a multiple of phrases_per_scene ({phrases_per_scene})")
        for setting, share in (("bare_share", bare_share), ("absent_bare_share", absent_bare_share)):
            if share is not None and not 0 <= share <= 1:
                raise RegionEditError(f"{setting} is a probability in [0, 1], got {share}")
        super().__init__(batch // phrases_per_scene, seed)
        self.tokenizer, self.phrases_per_scene = tokenizer, phrases_per_scene
        self.bare_share, self.absent_bare_share = bare_share, absent_bare_share

    def make(self, b):
        params = scenes_world.sample_params(self.seeds(b))
        named = {key: values.repeat_interleave(self.phrases_per_scene, 0) for key, values in params.items()}
        phrases, slots = object_phrases(named, self.generator(b), coloured_absent=True, bare_share=self.bare_share,
                                        absent_bare_share=self.absent_bare_share)
        return {"params": params, "ids": token_ids(self.tokenizer, phrases), "slots": torch.tensor(slots)}

    def materialise(self, item, device):
        images, labels = render_scene_images(item["params"], device)
        kinds = kind_maps(labels, item["params"]["kind"].to(labels.device))
        labels = labels.repeat_interleave(self.phrases_per_scene, 0)
        return clip_pixels(images, 64), item["ids"].to(device), phrase_masks(labels, item["slots"]), kinds


def kind_maps(labels: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """B×H×W labels (0 sky, 1 ground, 2 + slot) and B×SLOTS kind indices → B×H×W: 0 where no object
    shows, else 1 + the visible object's kind."""
    objects = labels >= 2
    slot = (labels - 2).clamp_min(0)
    return torch.where(objects, 1 + kinds.gather(1, slot.flatten(1)).view_as(labels), torch.zeros_like(labels))

