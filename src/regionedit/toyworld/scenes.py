"""Procedural scenes (sky, ground, 1–3 objects) with captions, instructions and ground-truth edits.

Each scene has four object slots; a slot holds a kind, a colour, a position and a size. Ground
objects stand on the ground in one of three lanes (so they overlap only a little) and are drawn
far to near; the sun sits in the sky behind everything. Kinds are unique within a scene, so
"the ball" always names one object.

``generate_edits(seeds)`` gives, per seed, a scene, one instruction (change colour, change object,
add or remove, in several phrasings), the source and target captions, the positioning text, the
target text, the rendered target and the exact edit mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from regionedit.errors import RegionEditError
from regionedit.toyworld import raster
from regionedit.toyworld.random import uniforms

KINDS = ("ball", "box", "tree", "house", "star", "sun")
GROUND_KINDS = KINDS[:5]
SUN = KINDS.index("sun")
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "brown")
COLOUR_RGB = (
    (0.86, 0.16, 0.16), (0.16, 0.62, 0.24), (0.16, 0.32, 0.86), (0.95, 0.83, 0.16), (0.96, 0.55, 0.12),
    (0.55, 0.24, 0.75), (0.96, 0.52, 0.75), (0.96, 0.96, 0.96), (0.10, 0.10, 0.10), (0.50, 0.31, 0.16),
)
GROUNDS = ("grass", "sand", "snow", "road")
GROUND_RGB = ((0.36, 0.63, 0.27), (0.86, 0.78, 0.55), (0.90, 0.93, 0.96), (0.45, 0.45, 0.47))
GROUND_PHRASE = ("on grass", "on sand", "on snow", "on a road")
SLOTS = 4
SUN_SLOT = 3
LANES = (0.2, 0.5, 0.8)
GROUPS = ("sky", "ground") + tuple(f"object{i}" for i in range(SLOTS))
ACTIONS = ("change_colour", "change_object", "add", "remove")
PHRASINGS = {
    "change_colour": ("make the {kind} {colour}", "turn the {kind} {colour}", "change the colour of the {kind} to {colour}",
                      "paint the {kind} {colour}", "change the color of the {kind} to {colour}"),
    "change_object": ("turn the {kind} into a {new}", "replace the {kind} with a {new}", "change the {kind} into a {new}",
                      "make the {kind} a {new}"),
    "add": ("add {a} {colour} {new}", "put {a} {colour} {new} in the picture", "place {a} {colour} {new} in the scene"),
    "remove": ("remove the {kind}", "get rid of the {kind}", "delete the {kind}", "take away the {kind}", "erase the {kind}"),
}
# The halves of the patch drawn around each object: large enough for every kind at the largest size.
PATCH_HALF_W, PATCH_HALF_H = 0.2, 0.2
MAX_SIZE = 0.13


# ------------------------------------------------------------------------------------ sampling
def _choose(u: torch.Tensor, options: int) -> torch.Tensor:
    return (u * options).long().clamp_max(options - 1)


def sample_params(seeds: Sequence[int]) -> dict[str, torch.Tensor]:
    """Scene parameters per seed (deterministic per seed)."""
    n = len(seeds)
    u = uniforms(seeds, 48, stream=1)
    params = {
        "ground": _choose(u[:, 0], len(GROUNDS)),
        "horizon": (0.40 + 0.15 * u[:, 1]).float(),
        "sky": u[:, 2].float(),
        "present": torch.zeros(n, SLOTS, dtype=torch.bool),
        "kind": torch.zeros(n, SLOTS, dtype=torch.long),
        "colour": _choose(u[:, 8:12], len(COLOURS)),
        "x": torch.zeros(n, SLOTS),
        "y": torch.zeros(n, SLOTS),
        "size": torch.zeros(n, SLOTS),
    }
    count = 1 + _choose(u[:, 3], 3)
    has_sun = u[:, 4] < 0.3
    ground_count = count - has_sun.long()
    kind_order = torch.argsort(u[:, 12:17], dim=1)  # a random permutation of the ground kinds
    lane_order = torch.argsort(u[:, 17:20], dim=1)
    for slot in range(3):
        present = slot < ground_count
        lane = torch.tensor(LANES)[lane_order[:, slot]]
        params["present"][:, slot] = present
        params["kind"][:, slot] = kind_order[:, slot]
        _place_on_ground(params, slot, lane, u[:, 20 + 3 * slot : 23 + 3 * slot])
    params["present"][:, SUN_SLOT] = has_sun
    params["kind"][:, SUN_SLOT] = SUN
    _place_sun(params, SUN_SLOT, u[:, 29:32])
    return params


def _place_on_ground(params: dict, slot: int | torch.Tensor, lane: torch.Tensor, u: torch.Tensor, rows=slice(None)) -> None:
    horizon = params["horizon"][rows]
    base = horizon + 0.17 + (0.97 - horizon - 0.17) * u[:, 1].float()
    depth = (base - horizon) / (1.0 - horizon)  # 0 far … 1 near
    params["x"][rows, slot] = lane + 0.1 * (u[:, 0].float() - 0.5)
    params["y"][rows, slot] = base
    params["size"][rows, slot] = (0.075 + 0.035 * u[:, 2].float()) * (0.8 + 0.35 * depth)


def _place_sun(params: dict, slot: int, u: torch.Tensor, rows=slice(None)) -> None:
    horizon = params["horizon"][rows]
    params["x"][rows, slot] = 0.15 + 0.7 * u[:, 0].float()
    params["y"][rows, slot] = 0.1 + (horizon - 0.22) * u[:, 1].float()
    params["size"][rows, slot] = 0.05 + 0.03 * u[:, 2].float()


# ----------------------------------------------------------------------------------- rendering
def _kind_shapes(kind: int, x, y, cx, base, s):
    """(outline, under, body, over) signed distances of one kind; None where the kind has no such part."""
    if kind == KINDS.index("ball"):
        body = raster.circle(x, y, cx, base - s, s)
        return body, None, body, raster.circle(x, y, cx - 0.35 * s, base - 1.35 * s, 0.22 * s)
    if kind == KINDS.index("box"):
        body = raster.box(x, y, cx, base - 0.95 * s, 0.95 * s, 0.95 * s, 0.1 * s)
        return body, None, body, None
    if kind == KINDS.index("tree"):
        trunk = raster.box(x, y, cx, base - 0.6 * s, 0.2 * s, 0.6 * s)
        foliage = raster.circle(x, y, cx, base - 1.75 * s, 0.85 * s)
        return torch.minimum(trunk, foliage), trunk, foliage, None
    if kind == KINDS.index("house"):
        body = raster.box(x, y, cx, base - 0.65 * s, 0.9 * s, 0.65 * s)
        roof = raster.triangle_up(x, y, cx, base - 1.25 * s, 1.15 * s, 0.8 * s)
        door = raster.box(x, y, cx, base - 0.3 * s, 0.2 * s, 0.3 * s)
        return torch.minimum(body, roof), roof, body, door
    if kind == KINDS.index("star"):
        body = raster.star5(x, y, cx, base - 1.05 * s, 1.1 * s)
        return body, None, body, None
    # sun: (cx, base) is its centre
    disc = raster.circle(x, y, cx, base, s)
    angle = torch.atan2(y - base, x - cx)
    rays = torch.maximum(raster.circle(x, y, cx, base, 1.55 * s), (torch.cos(8 * angle) - 0.6) * -0.05)
    return torch.minimum(disc, rays), rays, disc, None


PART_COLOURS = {  # colour of the "under" and "over" parts; None: the object's own colour
    "tree": ((0.45, 0.29, 0.14), None), "house": ((0.35, 0.22, 0.20), (0.30, 0.18, 0.10)),
    "sun": (None, None), "ball": (None, "highlight"),
}


def _part_colour(kind: int, which: int, colour: torch.Tensor) -> torch.Tensor:
    spec = PART_COLOURS.get(KINDS[kind], (None, None))[which]
    if spec is None:
        return colour
    if spec == "highlight":
        return colour + (1 - colour) * 0.55
    return torch.tensor(spec).expand_as(colour)


def render_scenes(params: dict, size: int = 64, supersample: int = 2, device="cpu", track_support: bool = False):
    """Render a batch of scenes → (images B×3×H×W, labels B×H×W (0 sky, 1 ground, 2+slot), support)."""
    p = {k: v.to(device) for k, v in params.items()}
    batch = p["ground"].shape[0]
    canvas = raster.Canvas(batch, size, supersample, device, GROUPS, track_support)
    horizon = p["horizon"].view(-1, 1, 1)
    sky_top = torch.tensor([0.35, 0.58, 0.92], device=device) + p["sky"].view(-1, 1) * torch.tensor([0.2, 0.15, 0.04], device=device)
    full = canvas.window()
    haze = ((full.y / horizon).clamp(0, 1) * 0.75).unsqueeze(-1)  # (B, h, 1, 1): lighter towards the horizon
    sky = sky_top.view(-1, 1, 1, 3) + (torch.tensor([0.85, 0.92, 0.98], device=device) - sky_top.view(-1, 1, 1, 3)) * haze
    canvas.blend("sky", sky, torch.ones(1, 1, 1, device=device), full)
    ground = torch.tensor(GROUND_RGB, device=device)[p["ground"]].view(-1, 1, 1, 3)
    shade = 1 - 0.12 * ((full.y - horizon) / (1 - horizon)).clamp(0, 1).unsqueeze(-1)  # darker towards the viewer
    canvas.blend("ground", ground * shade, canvas.coverage(horizon - full.y), full)

    # Draw far to near: the sun first, then ground objects by their base line.
    depth = torch.where(p["kind"] == SUN, torch.full_like(p["y"], -1.0), p["y"])
    order = torch.argsort(depth, dim=1, stable=True)
    for position in range(SLOTS):
        slot = order[:, position]
        kind, colour_index, present, cx, base, s = (
            p[key].gather(1, slot.view(-1, 1)).view(-1) for key in ("kind", "colour", "present", "x", "y", "size")
        )
        centre_y = torch.where(kind == SUN, base, base - PATCH_HALF_H + 0.02)
        region = canvas.patch(cx, centre_y, PATCH_HALF_W, PATCH_HALF_H)
        colour = torch.tensor(COLOUR_RGB, device=device)[colour_index]
        layers = _object_layers(region, kind, cx, base, s, colour)
        alpha, colours = raster.flatten_layers([(canvas.coverage(sdf), c) for sdf, c in layers])
        canvas.blend(2 + slot, colours, alpha, region, where=present)
    return canvas.result()


def _object_layers(region: raster.Region, kind, cx, base, s, colour):
    """Outline, under, body and over layers (signed distance, colour) of every image's object."""
    shape = (kind.shape[0], region.y.shape[1], region.x.shape[2])
    sdfs = [torch.ones(shape, device=kind.device) for _ in range(4)]
    colours = [colour * 0.45, colour.clone(), colour.clone(), colour.clone()]
    for k in kind.unique().tolist():
        idx = (kind == k).nonzero().view(-1)
        parts = _kind_shapes(k, region.x[idx], region.y[idx], cx[idx].view(-1, 1, 1), base[idx].view(-1, 1, 1), s[idx].view(-1, 1, 1))
        outline, under, body, over = parts
        sdfs[0][idx] = outline - 0.012
        for layer, part in ((1, under), (2, body), (3, over)):
            if part is not None:
                sdfs[layer][idx] = part
        colours[1][idx] = _part_colour(k, 0, colour[idx]).to(colour.device)
        colours[3][idx] = _part_colour(k, 1, colour[idx]).to(colour.device)
    return list(zip(sdfs, colours, strict=True))


# ------------------------------------------------------------------------------------- scenes
def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe_object(kind: int, colour: int) -> str:
    return f"{article(COLOURS[colour])} {COLOURS[colour]} {KINDS[kind]}"


def scene_objects(params: dict, i: int) -> list[dict]:
    """The objects of scene i of ``params``, left to right: slot, kind, colour. (Reads single items:
    keep ``params`` on the CPU where many are read, e.g. in a training stream.)"""
    slots = [s for s in range(SLOTS) if params["present"][i, s]]
    slots.sort(key=lambda s: float(params["x"][i, s]))
    return [{"slot": s, "kind": KINDS[int(params["kind"][i, s])], "colour": COLOURS[int(params["colour"][i, s])]} for s in slots]


def scene_caption(params: dict, i: int) -> str:
    names = [f"{article(o['colour'])} {o['colour']} {o['kind']}" for o in scene_objects(params, i)]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1] if names else "nothing"
    return f"{listed} {GROUND_PHRASE[int(params['ground'][i])]}"


@dataclass
class Scenes(raster.RenderedBatch):
    """A rendered batch of scenes: their parameters, with the images, object labels and optional supports."""

    params: dict[str, torch.Tensor]

    def objects(self, i: int) -> list[dict]:
        """The objects of scene i, left to right: slot, kind, colour."""
        return scene_objects(self.params, i)

    def caption(self, i: int) -> str:
        return scene_caption(self.params, i)

    def object_mask(self, slot: torch.Tensor | int) -> torch.Tensor:
        """B×1×H×W float mask of the visible pixels of each image's object in ``slot``."""
        slot = torch.as_tensor(slot, device=self.labels.device).view(-1, 1, 1)
        return (self.labels == 2 + slot).unsqueeze(1).float()


def render(params: dict, size: int = 64, device="cpu", track_support: bool = False, seeds=None) -> Scenes:
    images, labels, support = raster.in_chunks(render_scenes, params, size=size, device=device, track_support=track_support)
    return Scenes(params={k: v.to(device) for k, v in params.items()}, images=images, labels=labels, support=support,
                  seeds=tuple(seeds) if seeds is not None else None)


def generate_scenes(seeds: Sequence[int], size: int = 64, device="cpu", track_support: bool = False) -> Scenes:
    """Sample and render the scenes of ``seeds`` (same seed, same scene, bit for bit)."""
    return render(sample_params(seeds), size, device, track_support, seeds)


# -------------------------------------------------------------------------------------- edits
@dataclass
class SceneEdits:
    """One instruction per scene with its ground truth (the fields of ZONE's annotated test set)."""

    source: Scenes
    target: Scenes
    mask: torch.Tensor  # B×1×H×W, 1 where the edit may change pixels
    slot: torch.Tensor  # (B,) the edited object's slot
    action: list[str]
    instruction: list[str]
    source_caption: list[str]
    target_caption: list[str]
    source_object: list[str | None]  # positioning text ("the ball"); None for add
    target_object: list[str]  # "a blue ball"; for remove, what shows instead ("grass", "sky")
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.action)

    def record(self, i: int) -> dict:
        return {
            "action": self.action[i], "instruction": self.instruction[i],
            "source_caption": self.source_caption[i], "target_caption": self.target_caption[i],
            "source_object": self.source_object[i], "target_object": self.target_object[i],
            "slot": int(self.slot[i]), "seed": self.source.seeds[i] if self.source.seeds else None,
        }


def _plan_edit(params: dict, i: int, u: torch.Tensor, actions: Sequence[str]) -> dict:
    """Choose and apply one feasible edit to scene i of ``params`` (in place); return its description."""
    present = params["present"][i]
    kinds = {int(params["kind"][i, s]) for s in range(SLOTS) if present[s]}
    ground_slots = [s for s in range(3) if present[s]]
    free_slots = [s for s in range(3) if not present[s]]
    feasible = []
    for action in actions:
        if action in ("change_colour", "remove") and present.any():
            feasible.append(action)
        elif action == "change_object" and ground_slots:
            feasible.append(action)
        elif action == "add" and (free_slots or not present[SUN_SLOT]):
            feasible.append(action)
    if not feasible:
        raise RegionEditError(f"no feasible edit among {list(actions)} for scene {i}")
    action = feasible[int(_choose(u[0], len(feasible)))]
    occupied = [s for s in range(SLOTS) if present[s]]
    phrasing = PHRASINGS[action][int(_choose(u[1], len(PHRASINGS[action])))]
    if action == "add":
        options = ([("ground", s) for s in free_slots[:1]] if free_slots else []) + ([("sun", SUN_SLOT)] if not present[SUN_SLOT] else [])
        where, slot = options[int(_choose(u[2], len(options)))]
        if where == "sun":
            new_kind = SUN
            _place_sun(params, slot, u[3:6].view(1, -1), rows=slice(i, i + 1))
        else:
            missing = [k for k in range(len(GROUND_KINDS)) if k not in kinds]
            new_kind = missing[int(_choose(u[3], len(missing)))]
            used_lanes = {min(range(3), key=lambda j: abs(LANES[j] - float(params["x"][i, s]))) for s in ground_slots}
            lane = [j for j in range(3) if j not in used_lanes][0]
            _place_on_ground(params, slot, torch.tensor([LANES[lane]]), u[4:7].view(1, -1), rows=slice(i, i + 1))
        params["present"][i, slot] = True
        params["kind"][i, slot] = new_kind
        params["colour"][i, slot] = int(_choose(u[7], len(COLOURS)))
        kind, colour = new_kind, int(params["colour"][i, slot])
        text = phrasing.format(a=article(COLOURS[colour]), colour=COLOURS[colour], new=KINDS[kind])
        if kind == SUN and "picture" in text:
            text = text.replace("in the picture", "in the sky")
        return {"action": action, "slot": slot, "instruction": text, "source_object": None,
                "target_object": describe_object(kind, colour)}
    slots = ground_slots if action == "change_object" else occupied
    slot = slots[int(_choose(u[2], len(slots)))]
    kind, colour = int(params["kind"][i, slot]), int(params["colour"][i, slot])
    source_object = f"the {KINDS[kind]}"
    if action == "change_colour":
        new_colour = (colour + 1 + int(_choose(u[3], len(COLOURS) - 1))) % len(COLOURS)
        params["colour"][i, slot] = new_colour
        text = phrasing.format(kind=KINDS[kind], colour=COLOURS[new_colour])
        target = describe_object(kind, new_colour)
    elif action == "change_object":
        missing = [k for k in range(len(GROUND_KINDS)) if k not in kinds]
        new_kind = missing[int(_choose(u[3], len(missing)))]
        params["kind"][i, slot] = new_kind
        text = phrasing.format(kind=KINDS[kind], new=KINDS[new_kind])
        target = describe_object(new_kind, colour)
    else:  # remove
        params["present"][i, slot] = False
        text = phrasing.format(kind=KINDS[kind])
        target = "sky" if kind == SUN else GROUNDS[int(params["ground"][i])]
    return {"action": action, "slot": slot, "instruction": text, "source_object": source_object, "target_object": target}


def plan_edits(seeds: Sequence[int], actions: Sequence[str] = ACTIONS) -> tuple[dict, dict, list[dict]]:
    """The CPU half of :func:`generate_edits`: source parameters, target parameters and one plan per
    seed (action, slot, instruction, source and target object), nothing rendered."""
    unknown = set(actions) - set(ACTIONS)
    if unknown:
        raise RegionEditError(f"unknown action(s) {sorted(unknown)} (actions: {', '.join(ACTIONS)})")
    source_params = sample_params(seeds)
    target_params = {k: v.clone() for k, v in source_params.items()}
    u = uniforms(seeds, 8, stream=2)
    plans = [_plan_edit(target_params, i, u[i], actions) for i in range(len(seeds))]
    return source_params, target_params, plans


def zone_action(action: str) -> str:
    """The toy world's action as ZONE's classifier names it: both changes are "change"."""
    return "change" if action.startswith("change") else action


def action_instructions(split: str, count: int) -> list[tuple[str, str]]:
    """(instruction, action) of the first ``count`` edits of a split, planned only (nothing rendered):
    training and held-out data for ZONE's action classifier."""
    from regionedit.toyworld.splits import split_seeds

    return [(plan["instruction"], plan["action"]) for plan in plan_edits(split_seeds(split, count))[2]]


def generate_edits(
    seeds: Sequence[int], size: int = 64, device="cpu", actions: Sequence[str] = ACTIONS
) -> SceneEdits:
    """A scene and one instruction with its ground truth per seed (deterministic per seed)."""
    source_params, target_params, plans = plan_edits(seeds, actions)
    source = render(source_params, size, device, track_support=True, seeds=seeds)
    target = render(target_params, size, device, track_support=True, seeds=seeds)
    slot = torch.tensor([p["slot"] for p in plans], device=source.images.device)
    group = (2 + slot).view(-1, 1, 1, 1).expand(-1, 1, size, size)
    mask = (source.support.gather(1, group) | target.support.gather(1, group)).float()
    return SceneEdits(
        source=source, target=target, mask=mask, slot=slot,
        action=[p["action"] for p in plans], instruction=[p["instruction"] for p in plans],
        source_caption=[scene_caption(source_params, i) for i in range(len(seeds))],
        target_caption=[scene_caption(target_params, i) for i in range(len(seeds))],
        source_object=[p["source_object"] for p in plans], target_object=[p["target_object"] for p in plans],
    )
