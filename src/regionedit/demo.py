"""`regionedit demo`: run every method that exists on a few images and write an HTML gallery.

Rows on the embedded toy-world models show real, semantic edits: the pixel faces DDPM's noise space,
RBE directions of the latent faces model and JICA's of the pixel one, on a rendered toy face; text-based DDPM editing, RDM and ZONE on a rendered toy
scene with the latent toy models, each with its ground truth beside it. Each model's status (meets
its bar or preliminary) is in the intro. A row whose toy model is not in this installation falls
back to a *plumbing demo* on tiny randomly initialised models, labelled as such.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from skimage import data as skimage_data

from regionedit import __version__, metrics
from regionedit.editors import DDPMEditor, JICAEditor, RBEEditor, RDMEditor, ZoneEditor
from regionedit.gallery import GalleryRow, write_gallery
from regionedit.images import atomic_write, pil_to_tensor, save_png, unit_to_pil
from regionedit.methods import ddpm_edit

STEPS = 50
FACES_MODEL = "toy/faces-ddpm"  # the pixel DDPM: noise maps shifted and tinted in pixels
RBE_MODEL = "toy/faces-ldm"  # RBE's default (models/defaults.py); JICA's is FACES_MODEL
SCENES_T2I, SCENES_INSTRUCT, SCENES_CLIPSEG = "toy/scenes-t2i", "toy/scenes-instruct", "toy/scenes-clipseg"
TEXT_SEED = 3
FACE_SEED = 11
# Subspace iterations for RBE/JICA discovery in the demo (the methods' default is 50): on 2 CPU
# cores 50 would take about 65 s for RBE and 90 s for JICA at 64², more than the demo's budget.
DEMO_ITERATIONS = 20
SHIFT = 8
TINT, TINT_START = (0.3, -0.15, -0.15), 25  # a full-image tint from step 0 saturates this model


def _save(folder: Path, name: str, image: Image.Image, recipe: dict | None = None) -> str:
    save_png(image, folder / name, recipe)
    return name


def _pixel_error(a: Image.Image, b: Image.Image) -> float:
    return (pil_to_tensor(a) - pil_to_tensor(b)).abs().max().item() * 127.5


def run_demo(out: str | Path = "demo-output", progress: bool = True, log=print) -> Path:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    photo = Image.fromarray(skimage_data.astronaut()).resize((64, 64), Image.Resampling.LANCZOS)
    timings: dict[str, float] = {}

    def timed(name: str, row: Callable[[], GalleryRow]) -> GalleryRow:
        began = time.perf_counter()
        result = row()
        timings[name] = round(time.perf_counter() - began, 2)
        return result

    faces_editor, faces = _editor(DDPMEditor, FACES_MODEL, progress), _toy_faces()
    rows = [timed("ddpm_faces", lambda: _pixel_ddpm_row(folder, faces_editor, faces, log)),
            timed("ddpm_text", lambda: _text_row(folder, photo, progress, log)),
            *_face_direction_rows(folder, _rbe_model(progress), faces_editor.model, faces.images, log, timed),
            timed("rdm", lambda: _rdm_row(folder, progress, log)),
            timed("zone", lambda: _zone_row(folder, progress, log))]
    total = time.perf_counter() - start
    intro = f"regionedit {__version__} demo. " + _intro() + f" Total time {total:.1f} s."
    summary = json.dumps({"seconds": timings, "total_s": round(total, 2)}, indent=2)
    atomic_write(folder / "timings.json", lambda tmp: tmp.write_text(summary))
    path = write_gallery(folder, "regionedit demo", intro, rows)
    log(f"wrote {path} ({total:.0f} s)")
    return path


def _intro() -> str:
    """What the rows run on: embedded toy models (with their status) and, for what is not shipped yet,
    tiny random models labelled as a plumbing demo."""
    from regionedit.bench.toymodels import model_status
    from regionedit.models.loading import embedded_models

    embedded = embedded_models()
    parts = [f"{name}: {model_status(embedded[name]).split(' (')[0]}" for name in
             (FACES_MODEL, RBE_MODEL, SCENES_T2I, SCENES_INSTRUCT, SCENES_CLIPSEG) if name in embedded]
    text = ("Rows on the embedded toy-world models show real, semantic edits of a rendered toy face or scene, with the "
            "ground truth beside them where the toy world has one (" + "; ".join(parts) + ").")
    missing = [name for name in (SCENES_T2I, SCENES_INSTRUCT) if name not in embedded]
    if missing:
        text += (f" {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in this installation yet, so "
                 "the rows that need them are a PLUMBING DEMO on tiny randomly initialised models of the real "
                 "architectures: reconstructions are exact and masks are respected to the pixel, but the pictures "
                 "are what random networks draw.")
    return text


def _editor(cls, name: str, progress: bool, **companions):
    editor = cls.from_pretrained(name, device="cpu", **companions)
    editor.set_progress_bar_config(disable=not progress)
    return editor


def _rbe_model(progress: bool):
    """The latent faces model where this installation ships it, else the pixel one."""
    return _editor(RBEEditor, RBE_MODEL if _embedded(RBE_MODEL) else FACES_MODEL, progress).model


def _toy_faces():
    from regionedit.toyworld.faces import generate_faces

    return generate_faces([FACE_SEED], size=64)


def _pixel_ddpm_row(folder: Path, editor: DDPMEditor, faces, log) -> GalleryRow:
    log(f"edit-friendly DDPM inversion on {FACES_MODEL} (unconditional pixel DDPM)")
    face, hair = unit_to_pil(faces.images[0]), faces.mask("hair")
    inversion = editor.invert(face, num_inference_steps=STEPS, generator=0)
    recon = editor.reconstruct(inversion)
    shifted = editor.reconstruct(ddpm_edit.shift(inversion, dx=SHIFT, dy=0))
    tinted = editor.reconstruct(ddpm_edit.tint(inversion, TINT, mask=hair, start=TINT_START))
    error = _pixel_error(recon.image, face)
    images = [
        (_save(folder, "ddpm_input.png", face), "input: a rendered toy face (64×64)"),
        (_save(folder, "ddpm_reconstruction.png", recon.image, recon.recipe), f"reconstruction (max error {error:.1f}/255)"),
        (_save(folder, "ddpm_shift.png", shifted.image, shifted.recipe), f"noise maps shifted {SHIFT} px right"),
        (_save(folder, "ddpm_tint.png", tinted.image, tinted.recipe), f"hair of the noise maps tinted red from step {TINT_START}"),
    ]
    params = {"model": editor.model.name, "steps": STEPS, "seed": 0, "eta": 1.0, "shift": [SHIFT, 0], "tint": list(TINT),
              "tint_mask": "the hair of the input (its label map)", "tint_start": TINT_START}
    return GalleryRow("Edit-friendly DDPM noise space: the toy faces model", images, params,
                      note="Shifting the noise maps moves the face (the model invents the vacated strip); a colour "
                           "offset added to the maps inside the hair from mid-way recolours the hair.")


def _embedded(name: str) -> bool:
    from regionedit.models.loading import embedded_models

    return name in embedded_models()


def _scene_edit(seed: int, action: str):
    from regionedit.toyworld.scenes import generate_edits

    return generate_edits([seed], actions=[action])


def _mask_image(mask: torch.Tensor) -> Image.Image:
    return unit_to_pil(mask.reshape(1, *mask.shape[-2:]).expand(3, -1, -1).float())


def _caption_edit(editor: DDPMEditor, image, source: str, target: str):
    """The input's inversion with its caption, the reconstruction, and the edit toward ``target``
    (the paper's skip of 36 %, scaled to the demo's step count)."""
    inversion = editor.invert(image, prompt=source, num_inference_steps=STEPS, generator=0)
    skip = round(STEPS * 0.36)
    return inversion, editor.reconstruct(inversion), editor.edit(inversion, prompt=target, skip=skip), skip


def _text_row(folder: Path, photo: Image.Image, progress: bool, log) -> GalleryRow:
    if _embedded(SCENES_T2I):
        return _toy_text_row(folder, progress, log)
    log("edit-friendly DDPM text editing on tiny/sd (latent, text-conditional)")
    editor = _editor(DDPMEditor, "tiny/sd", progress)
    source, target = "a photo of a man", "a photo of a cat"
    inversion, recon, edited, skip = _caption_edit(editor, photo, source, target)
    latent_error = (recon.details.sample - inversion.x0).abs().max().item()
    round_trip = ddpm_edit.to_image(editor.model, inversion.x0, inversion)
    images = [
        (_save(folder, "sd_input.png", photo), f"input: '{source}'"),
        (_save(folder, "sd_vae_round_trip.png", round_trip), "VAE decode(encode(input))"),
        (_save(folder, "sd_reconstruction.png", recon.image, recon.recipe), f"reconstruction (latent max error {latent_error:.1e})"),
        (_save(folder, "sd_edit.png", edited.image, edited.recipe), f"edit: '{target}', CFG 15, skip {skip}"),
    ]
    return GalleryRow(
        "Edit-friendly DDPM: text-based editing, latent model",
        images,
        edited.recipe,
        note="The tiny VAE is random too, so its round trip is already noise; the reconstruction matches it.",
    )


def _toy_text_row(folder: Path, progress: bool, log) -> GalleryRow:
    log(f"edit-friendly DDPM text editing of a toy scene on {SCENES_T2I}")
    editor = _editor(DDPMEditor, SCENES_T2I, progress)
    edits = _scene_edit(TEXT_SEED, "change_colour")
    source, target = edits.source_caption[0], edits.target_caption[0]
    scene = unit_to_pil(edits.source.images[0])
    inversion, recon, edited, skip = _caption_edit(editor, scene, source, target)
    round_trip = ddpm_edit.to_image(editor.model, inversion.x0, inversion)
    images = [
        (_save(folder, "sd_input.png", scene), f"input: '{source}'"),
        (_save(folder, "sd_vae_round_trip.png", round_trip), "the toy autoencoder's round trip"),
        (_save(folder, "sd_reconstruction.png", recon.image, recon.recipe), "reconstruction from the noise maps"),
        (_save(folder, "sd_edit.png", edited.image, edited.recipe), f"edit: '{target}', CFG 15, skip {skip}"),
        (_save(folder, "sd_truth.png", unit_to_pil(edits.target.images[0])), "ground truth of the edit"),
    ]
    return GalleryRow(f"Edit-friendly DDPM: text-based editing of a toy scene ({SCENES_T2I})", images, edited.recipe,
                      note="The noise maps of the source caption, re-used with the target caption; the rendered "
                           "ground truth is the same scene with the colour changed.")


def _mean_change(edited: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, region: str = "inside") -> float:
    """Mean absolute change (0..1 scale) inside or outside a mask."""
    return round(metrics.l1(edited, reference, mask, region).item(), 4)


def _face_direction_rows(folder: Path, rbe_model, jica_model, face: torch.Tensor, log, timed) -> list[GalleryRow]:
    from regionedit.masks import face_part_mask

    rbe, jica = RBEEditor(rbe_model), JICAEditor(jica_model)
    size = tuple(face.shape[-2:])
    eyes, mouth = face_part_mask("eyes", size), face_part_mask("mouth", size)
    _save(folder, "face_input.png", unit_to_pil(face[0]))
    # the methods' defaults: 40-step DDIM inversion to t = 500
    return [timed("rbe", lambda: _rbe_row(folder, rbe, rbe.invert(face), eyes, log)),
            timed("jica", lambda: _jica_row(folder, jica, jica.invert(face), eyes, mouth, log))]


def _rbe_row(folder: Path, editor: RBEEditor, start, eyes: torch.Tensor, log) -> GalleryRow:
    log(f"RBE: directions for the eyes of a toy face on {editor.model.name}")
    directions = editor.discover(start, eyes, region_name="face:eyes", max_iterations=DEMO_ITERATIONS)
    unedited = editor.apply(start, directions, 0, 0.0)
    images = [("face_input.png", "input: a rendered toy face (64×64)"),
              (_save(folder, "rbe_mask.png", unit_to_pil(eyes.expand(1, 3, -1, -1)[0])), "region: face:eyes")]
    changes = {}
    for index, strength in ((0, -30.0), (0, 0.0), (0, 30.0), (1, -30.0), (1, 30.0)):
        edited = unedited if strength == 0 else editor.apply(start, directions, index, strength)
        name = f"rbe_{index}_{strength:+.0f}.png"
        images.append((_save(folder, name, edited.image), f"direction {index}, γ = {strength:+.0f}"))
        if strength:
            changes[f"direction {index}, γ={strength:+.0f}"] = {
                region: _mean_change(edited.pixels, unedited.pixels, eyes, region) for region in ("inside", "outside")}
    report = {k: directions.report[k] for k in ("leak_before", "leak_after", "iterations", "seconds")}
    return GalleryRow(
        f"RBE: local directions for the eyes ({editor.model.name})", images,
        {**report, "max_iterations": DEMO_ITERATIONS, "mean change vs γ = 0 (0..1)": changes},
        note="Directions found without supervision from the Jacobian of the eye region, confined by projecting off "
             "the top singular directions of the rest of the image; leak_after = ‖J_C u‖ / ‖J_M u‖ per direction "
             "(lower is more local). γ = 0 is the DDIM round trip of the input.",
    )


def _jica_row(folder: Path, editor: JICAEditor, start, eyes: torch.Tensor, mouth: torch.Tensor, log) -> GalleryRow:
    log(f"JICA: joint and individual directions of the eyes and the mouth on {editor.model.name}")
    directions = editor.discover(start, [eyes, mouth], region_names=["eyes", "mouth"], max_iterations=DEMO_ITERATIONS)
    unedited = editor.apply(start, directions, 0, 0.0).pixels
    both = torch.maximum(eyes, mouth)
    images = [("face_input.png", "input: a rendered toy face (64×64)")]
    changes = {}
    for label in ("joint 0", "individual eyes 0", "individual mouth 0"):
        index = directions.labels.index(label)
        result = editor.apply(start, directions, index, 30.0)
        edited = result.pixels
        images.append((_save(folder, f"jica_{label.replace(' ', '_')}.png", result.image), f"{label}, γ = +30"))
        changes[label] = {"eyes": _mean_change(edited, unedited, eyes), "mouth": _mean_change(edited, unedited, mouth),
                          "elsewhere": _mean_change(edited, unedited, both, "outside")}
    return GalleryRow(
        f"JICA: joint and individual directions of eyes and mouth ({editor.model.name})", images,
        {"labels": directions.labels, "max_iterations": DEMO_ITERATIONS, "seconds": directions.report["seconds"],
         "mean change vs γ = 0 (0..1)": changes},
        note="Joint directions move both regions together; individual ones move one region and not the other.",
    )


def _rdm_row(folder: Path, progress: bool, log) -> GalleryRow:
    toy = _embedded(SCENES_T2I)
    model_name = SCENES_T2I if toy else "tiny/sd"
    located = _embedded(SCENES_CLIPSEG) or not toy
    log(f"RDM on a toy scene with {model_name}")
    editor = _editor(RDMEditor, model_name, progress)  # with its family's segmenter and CLIP
    edits = _scene_edit(5, "change_colour")
    locate, target = edits.source_object[0], edits.target_object[0]
    if located:
        out = editor(edits.source.images, target, locate=locate, threshold=150 if toy else 100, num_inference_steps=STEPS)
        where = f"mask located from '{locate}'"
    else:  # no toy CLIPSeg in this installation: the object's ground-truth mask stands in for it
        out = editor(edits.source.images, target, mask=edits.mask[0:1].float(), num_inference_steps=STEPS)
        where = "mask: the object's ground truth (no toy CLIPSeg shipped yet)"
    images = [
        (_save(folder, "rdm_input.png", unit_to_pil(edits.source.images[0])), f"input: {edits.source_caption[0]}"),
        (_save(folder, "rdm_mask.png", _mask_image(out.masks["edit"][0])), where),
        (_save(folder, "rdm_output.png", out.image, out.recipe), f"'{locate}' → '{target}' (outside the mask: the input, exactly)"),
    ]
    if toy:
        images.append((_save(folder, "rdm_truth.png", unit_to_pil(edits.target.images[0])), "ground truth"))
    note = ("Blended latent sampling inside the mask with CFG and CLIP guidance, the background-preserving loss "
            "outside, then paste-back." if toy else
            "Random segmenter and model: the mask and the content are arbitrary; the mechanics are real.")
    return GalleryRow(f"RDM: region, blended sampling, CLIP guidance, paste-back ({model_name})", images, out.recipe, note=note)


def _zone_row(folder: Path, progress: bool, log) -> GalleryRow:
    toy = _embedded(SCENES_INSTRUCT)
    model_name = SCENES_INSTRUCT if toy else "tiny/ip2p"
    editor = _editor(ZoneEditor, model_name, progress)  # fused with its family's partner where there is one
    partner = editor.second_model.name if editor.second_model is not None else None
    log(f"ZONE on a toy scene with {model_name}" + (f" fused with {partner}" if partner else ""))
    edits = _scene_edit(8, "change_colour")
    out = editor(edits.source.images, edits.instruction[0])
    by_attention = out.recipe["localisation"] == "attention"
    images = [
        (_save(folder, "zone_input.png", unit_to_pil(edits.source.images[0])), f"input: {edits.source_caption[0]}"),
        (_save(folder, "zone_edited.png", out.images["edited"]), "instruct model's output, not localised"),
        (_save(folder, "zone_coarse.png", _mask_image(out.masks["coarse"][0])),
         "attention mask" if by_attention else "coarse mask: where the edit changed the input"),
        (_save(folder, "zone_final_mask.png", _mask_image(out.masks["final"][0])), "final mask"),
        (_save(folder, "zone_output.png", out.image, out.recipe), f"'{edits.instruction[0]}' (outside the mask: the input)"),
    ]
    if toy:
        images += [(_save(folder, "zone_truth.png", unit_to_pil(edits.target.images[0])), "ground truth"),
                   (_save(folder, "zone_truth_mask.png", _mask_image(edits.mask[0])), "ground-truth mask")]
    coarse = "attention mask" if by_attention else "change mask"
    source = ("the instruction's cross-attention" if by_attention else
              "where the instruct models changed the input (the toy models' localisation, see the README)")
    note = (f"The coarse mask comes from {source}; it is refined to the segment of best Region-IoU and smoothed, and "
            "the edit is pasted inside it." if toy else
            "Random instruct models: the masks are arbitrary; the locality is exact.")
    return GalleryRow(f"ZONE: instruction → {coarse} → Region-IoU segment → FFT edge smoother ({model_name})",
                      images, out.recipe, note=note)
