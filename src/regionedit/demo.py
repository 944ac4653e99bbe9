"""`regionedit demo`: run every method that exists on a few images and write an HTML gallery.

Until the embedded toy-world models ship, this is a *plumbing demo*: tiny randomly initialised
models and a scikit-image sample photo. It shows the machinery (exact reconstruction from the
edit-friendly noise space, noise-map shifts and tints, prompt-driven edits) but the pictures
are what random networks draw, not meaningful edits.
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image
from skimage import data as skimage_data

from regionedit import __version__
from regionedit.core.inversion import invert
from regionedit.gallery import GalleryRow, write_gallery
from regionedit.images import pil_to_tensor, save_png, tensor_to_pil
from regionedit.methods import ddpm_edit
from regionedit.models import load_model

STEPS = 50


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
    rows = [_pixel_ddpm_row(folder, photo, progress, log), _text_row(folder, photo, progress, log),
            _rbe_row(folder, log), _rdm_row(folder, progress, log), _zone_row(folder, progress, log)]
    intro = (
        f"PLUMBING DEMO (regionedit {__version__}): the embedded toy-world models are not shipped yet, so "
        "these runs use tiny randomly initialised models of the real architectures on a scikit-image "
        "sample photo and toy-world images: the edit-friendly DDPM noise space, RBE, RDM and ZONE. "
        "Reconstructions are exact and masks are respected to the pixel; the edited pictures are what "
        "random networks draw. "
        f"Total time {time.perf_counter() - start:.1f} s."
    )
    path = write_gallery(folder, "regionedit demo", intro, rows)
    log(f"wrote {path}")
    return path


def _pixel_ddpm_row(folder: Path, photo: Image.Image, progress: bool, log) -> GalleryRow:
    log("edit-friendly DDPM inversion on tiny/pixel-ddpm (unconditional pixel DDPM)")
    model = load_model("tiny/pixel-ddpm", device="cpu")
    inversion = invert(model, photo, num_inference_steps=STEPS, seed=0, progress=progress)
    recon = ddpm_edit.reconstruct(model, inversion, progress=progress)
    shifted = ddpm_edit.reconstruct(model, ddpm_edit.shift(inversion, dx=12, dy=0), progress=progress)
    tinted = ddpm_edit.reconstruct(model, ddpm_edit.tint(inversion, (0.6, -0.3, -0.3)), progress=progress)
    error = _pixel_error(recon.image, photo)
    images = [
        (_save(folder, "ddpm_input.png", photo), "input (64×64)"),
        (_save(folder, "ddpm_reconstruction.png", recon.image, recon.recipe), f"reconstruction (max error {error:.1f}/255)"),
        (_save(folder, "ddpm_shift.png", shifted.image, shifted.recipe), "noise maps shifted 12 px right"),
        (_save(folder, "ddpm_tint.png", tinted.image, tinted.recipe), "noise maps tinted red"),
    ]
    params = {"model": model.name, "steps": STEPS, "seed": 0, "eta": 1.0, "shift": [12, 0], "tint": [0.6, -0.3, -0.3]}
    return GalleryRow("Edit-friendly DDPM noise space: pixel model", images, params)


def _text_row(folder: Path, photo: Image.Image, progress: bool, log) -> GalleryRow:
    log("edit-friendly DDPM text editing on tiny/sd (latent, text-conditional)")
    model = load_model("tiny/sd", device="cpu")
    source, target = "a photo of a man", "a photo of a cat"
    inversion = invert(model, photo, prompt=source, guidance_scale=3.5, num_inference_steps=STEPS, seed=0, progress=progress)
    recon = ddpm_edit.reconstruct(model, inversion, progress=progress)
    skip = round(STEPS * 0.36)
    edited = ddpm_edit.edit(model, inversion, target, guidance_scale=15.0, skip=skip, progress=progress)
    latent_error = (recon.sample - inversion.x0).abs().max().item()
    round_trip = ddpm_edit.to_image(model, inversion.x0, inversion)
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


def _rbe_row(folder: Path, log) -> GalleryRow:
    from regionedit.masks import face_part_mask
    from regionedit.methods import rbe
    from regionedit.methods.hspace_edit import sample_with_direction, start_from_image, to_pixels
    from regionedit.toyworld.faces import generate_faces

    log("RBE directions for the eyes of a toy face on tiny/pixel-ddpm")
    model = load_model("tiny/pixel-ddpm", device="cpu")
    face = generate_faces([11], size=32).images
    start = start_from_image(model, face)
    directions = rbe.discover(model, start, face_part_mask("eyes", (32, 32)), region_name="face:eyes")
    strengths = (-30.0, 0.0, 30.0)
    images = [(_save(folder, "rbe_input.png", tensor_to_pil(face[0] * 2 - 1)), "input: a toy face (32×32)")]
    for strength in strengths:
        edited = to_pixels(model, start, sample_with_direction(model, start, directions.vector(0), strength))
        images.append((_save(folder, f"rbe_{strength:+.0f}.png", tensor_to_pil(edited[0] * 2 - 1)), f"direction 0, γ = {strength:+.0f}"))
    report = {k: directions.report[k] for k in ("leak_before", "leak_after", "iterations", "seconds")}
    return GalleryRow("RBE: eye directions (random model, so the edits are not semantic)", images, report)


def _rdm_row(folder: Path, progress: bool, log) -> GalleryRow:
    from regionedit.methods import rdm
    from regionedit.segment import load_clip, load_segmenter
    from regionedit.toyworld.scenes import generate_edits

    log("RDM on a toy scene with tiny/sd, tiny/clipseg and tiny/clip")
    model = load_model("tiny/sd", device="cpu")
    edits = generate_edits([5], actions=["change_colour"])
    locate, target = edits.source_object[0], edits.target_object[0]
    out = rdm.edit(model, edits.source.images, target, locate=locate, segmenter=load_segmenter("tiny/clipseg", "cpu"),
                   clip=load_clip("tiny/clip", "cpu"), threshold=100, num_inference_steps=STEPS, progress=progress)
    images = [
        (_save(folder, "rdm_input.png", tensor_to_pil(edits.source.images[0] * 2 - 1)), f"input: {edits.source_caption[0]}"),
        (_save(folder, "rdm_mask.png", tensor_to_pil(out.mask[0].expand(3, -1, -1) * 2 - 1)), f"mask located from '{locate}'"),
        (_save(folder, "rdm_output.png", out.image, out.recipe), f"'{locate}' → '{target}' (outside the mask: the input, exactly)"),
    ]
    return GalleryRow("RDM: text-located region, blended sampling, CLIP guidance, paste-back", images, out.recipe,
                      note="Random segmenter and model: the mask and the content are arbitrary; the mechanics are real.")


def _zone_row(folder: Path, progress: bool, log) -> GalleryRow:
    from regionedit.methods import zone
    from regionedit.toyworld.scenes import generate_edits

    log("ZONE on a toy scene with tiny/ip2p fused with tiny/ip2p-b")
    edits = generate_edits([8], actions=["change_colour"])
    out = zone.edit(load_model("tiny/ip2p", device="cpu"), edits.source.images, edits.instruction[0],
                    second_model=load_model("tiny/ip2p-b", device="cpu"), num_inference_steps=STEPS // 2, progress=progress)
    images = [
        (_save(folder, "zone_input.png", tensor_to_pil(edits.source.images[0] * 2 - 1)), f"input: {edits.source_caption[0]}"),
        (_save(folder, "zone_edited.png", out.edited), "instruct models' output (everything changes)"),
        (_save(folder, "zone_coarse.png", tensor_to_pil(out.coarse_mask[0].expand(3, -1, -1) * 2 - 1)), "attention mask"),
        (_save(folder, "zone_final_mask.png", tensor_to_pil(out.final_mask[0].expand(3, -1, -1) * 2 - 1)), "final mask"),
        (_save(folder, "zone_output.png", out.image, out.recipe), f"'{edits.instruction[0]}' (outside the mask: the input)"),
    ]
    return GalleryRow("ZONE: instruction → attention mask → Region-IoU segment → FFT edge smoother → layer", images,
                      out.recipe, note="Random instruct models: the masks are arbitrary; the locality is exact.")
