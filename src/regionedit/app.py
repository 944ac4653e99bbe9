"""`regionedit serve`: a local Gradio editor for every method.

Upload an image or pick a sample, draw a mask with the brush (or give a box, a positioning text or
an instruction), pick a method and its parameters, and get the result beside the input, with the
PNG, the mask and the RGBA layer to download. ZONE keeps a multi-turn history with undo; RBE/JICA
discover directions once and then follow a strength slider; the DDPM inversion of an image is
reused across edits of it. The brush is a mask source like any other
(:class:`regionedit.mask_sources.BrushMask`): RDM's region, ZONE's region in place of its attention,
RBE's region or one of JICA's.

Hygiene: binds 127.0.0.1 unless told otherwise; uploads above ``MAX_UPLOAD_MB`` or ``MAX_SIDE``
pixels per side are refused with a message; only files in the app's own output folder are served;
every output is PNG.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from regionedit import checks, defaults  # noqa: E402
from regionedit.errors import RegionEditError  # noqa: E402
from regionedit.images import mask_to_pil, save_png, to_rgb, unit_to_pil  # noqa: E402
from regionedit.mask_sources import BrushMask  # noqa: E402
from regionedit.models.defaults import EMBEDDED_DEFAULTS, TASK_ALIASES  # noqa: E402

MAX_UPLOAD_MB = 20
MAX_SIDE = 2048


# Per tab: the embedded toy model (the same table as the CLI's defaults) when this installation
# ships it, else the tiny random one.
DEFAULT_MODELS = {tab: (EMBEDDED_DEFAULTS[TASK_ALIASES.get(tab, tab)], tiny) for tab, tiny in
                  (("zone", "tiny/ip2p"), ("rdm", "tiny/sd"), ("ddpm", "tiny/sd"), ("rbe", "tiny/pixel-ddpm"),
                   ("jica", "tiny/pixel-ddpm"))}


def default_models() -> dict[str, str]:
    """Embedded toy models where this installation has them, else the tiny random ones."""
    from regionedit.models.loading import embedded_models

    embedded = embedded_models()
    return {tab: toy if toy in embedded else tiny for tab, (toy, tiny) in DEFAULT_MODELS.items()}


def samples() -> dict[str, Image.Image]:
    from regionedit.toyworld.faces import generate_faces
    from regionedit.toyworld.scenes import generate_scenes

    scenes, faces = generate_scenes([5, 8, 13]), generate_faces([3, 11])
    found = {f"toy scene {i + 1}": unit_to_pil(scenes.images[i]) for i in range(3)}
    found |= {f"toy face {i + 1}": unit_to_pil(faces.images[i]) for i in range(2)}
    return found


@dataclass
class Workspace:
    """What the app keeps between calls: loaded editors, inversions, directions, output folder."""

    out: Path
    editors: dict = field(default_factory=dict)
    inversions: dict = field(default_factory=dict)

    def editor(self, cls, name: str, **companions):
        """The editor of ``cls`` on model ``name`` (with its companions), loaded once."""
        name = (name or "").strip()
        if not name:
            raise RegionEditError("give a model: a hub id, a local folder, toy/… or tiny/… (see `regionedit models`)")
        key = (cls.__name__, name, *sorted(companions.items()))
        if key not in self.editors:
            self.editors[key] = cls.from_pretrained(name, **companions)
        return self.editors[key]

    def save(self, image: Image.Image, label: str, recipe: dict | None = None) -> str:
        path = self.out / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.perf_counter_ns() % 10**6:06d}-{label}.png"
        save_png(image, path, recipe)
        return str(path)


# ----------------------------------------------------------------------------------- inputs
def image_and_mask(value) -> tuple[Image.Image, BrushMask | None]:
    """The editor's value → (RGB image, the brush strokes of all layers as a mask source, or None
    where nothing is drawn). Every tab passes the brush to its editor like any other mask source."""
    if value is None or value.get("background") is None:
        raise RegionEditError("upload an image first (or pick a sample)")
    background = value["background"]
    if max(background.size) > MAX_SIDE:
        raise RegionEditError(f"image too large: {background.size[0]}×{background.size[1]}; the limit is {MAX_SIDE} px per side")
    image = to_rgb(background).image
    strokes = Image.new("RGBA", image.size, (0, 0, 0, 0))
    for layer in value.get("layers") or []:
        if layer is not None:
            strokes = Image.alpha_composite(strokes, layer.convert("RGBA").resize(image.size, Image.Resampling.NEAREST))
    drawn = np.asarray(strokes)[..., 3].any()
    return image, BrushMask(strokes) if drawn else None


def region_source(spec: str):
    """A region typed into the page → its mask source. Paths are refused: a page must not read the
    server's files (draw such a region with the brush instead)."""
    from regionedit.mask_sources import FileMask, parse_mask_spec

    source = parse_mask_spec(spec)
    if isinstance(source, FileMask):
        raise RegionEditError(f"region {spec!r}: give face:<part>, x0,y0,x1,y1, text:<words>, attention:<instruction> "
                              "or segment:x,y (or draw it with the brush)")
    return source


def box_source(box: str | None):
    """The box field (x0,y0,x1,y1 in pixels) → a box mask source, or None where it is empty."""
    return region_source(f"box:{box.strip()}") if box and box.strip() else None


def load_upload(ws: Workspace, path: str | None):
    """A file from the uploader: read and checked on the server, then put into the editor."""
    from regionedit.images import load_image

    if not path or not Path(path).is_file():
        raise RegionEditError("no file received")
    size_mb = Path(path).stat().st_size / 2**20
    if size_mb > MAX_UPLOAD_MB:
        raise RegionEditError(f"file too large: {size_mb:.1f} MB; the limit is {MAX_UPLOAD_MB} MB")
    loaded = load_image(path)
    if max(loaded.image.size) > MAX_SIDE:
        raise RegionEditError(f"image too large: {loaded.image.size[0]}×{loaded.image.size[1]}; the limit is {MAX_SIDE} px per side")
    note = "; ".join(n.split(": ", 1)[-1] for n in loaded.notes)
    message = f"loaded {loaded.image.size[0]}×{loaded.image.size[1]}" + (f" ({note})" if note else "")
    return {"background": loaded.image, "layers": [], "composite": loaded.image}, message


def setting(name: str, value, kind: type = float, low: float | None = None, high: float | None = None):
    """A slider or number field's value, checked: the browser can send None, NaN or anything."""
    if kind is int:
        return checks.integer(name, checks.number(name, value), low, high)
    return checks.number(name, value, low, high)


def image_key(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------- handlers
def run_rdm(ws: Workspace, value, locate: str, target: str, box: str, model_name: str, threshold: float, steps: int,
            clip_scale: float):
    from regionedit.editors import RDMEditor

    image, drawn = image_and_mask(value)
    mask = drawn if drawn is not None else box_source(box)
    steps, threshold = setting("steps", steps, int, 1), setting("threshold", threshold, float, 0, 255)
    clip_scale = setting("CLIP guidance scale", clip_scale, float, 0)
    out = ws.editor(RDMEditor, model_name)(image, target, locate=locate or None, mask=mask, num_inference_steps=steps,
                                           threshold=threshold, clip_guidance_scale=clip_scale)
    region = mask_to_pil(out.masks["edit"])
    files = [ws.save(out.image, "rdm", out.recipe), ws.save(region, "rdm-mask")]
    return out.image, region, files, f"RDM: '{locate or 'mask'}' → '{target}'"


def run_zone(ws: Workspace, value, instruction: str, model_name: str, steps: int, single: bool, history: list):
    from regionedit.editors import ZoneEditor

    image, drawn = image_and_mask(value)
    steps = setting("steps", steps, int, 1)
    key = image_key(image)
    history = [turn for turn in (history or []) if turn["base"] == key]
    current = history[-1]["image"] if history else image
    editor = ws.editor(ZoneEditor, model_name, second_model=None if single else "auto")
    out = editor(current, instruction, mask=drawn, num_inference_steps=steps)  # brush strokes replace the attention
    final = mask_to_pil(out.masks["final"])
    files = [ws.save(out.image, "zone", out.recipe), ws.save(final, "zone-mask"),
             ws.save(out.images["layer"], "zone-layer", out.recipe)]
    history = history + [{"base": key, "image": out.image, "instruction": instruction}]
    notes = f" — {'; '.join(out.recipe['notes'])}" if out.recipe["notes"] else ""
    return out.image, final, files, history_text(history) + notes, history


def undo_zone(history: list):
    history = list(history or [])
    if not history:
        raise RegionEditError("nothing to undo")
    history.pop()
    image = history[-1]["image"] if history else None
    return image, history_text(history), history


def history_text(history: list) -> str:
    if not history:
        return "no ZONE turns yet"
    return "ZONE turns: " + " → ".join(f"{i + 1}. {turn['instruction']}" for i, turn in enumerate(history))


def run_ddpm(ws: Workspace, value, source_prompt: str, target_prompt: str, skip: int, target_cfg: float, steps: int,
             model_name: str):
    from regionedit.editors import DDPMEditor

    image, _ = image_and_mask(value)
    steps, skip = setting("steps", steps, int, 1), setting("skip", skip, int, 0)
    target_cfg = setting("target CFG", target_cfg, float, 0)
    editor = ws.editor(DDPMEditor, model_name)
    text = editor.model.is_text_conditional  # the prompt boxes are ignored for unconditional models
    key = (image_key(image), editor.model.name, source_prompt, steps)
    reused = key in ws.inversions
    if not reused:
        ws.inversions[key] = editor.invert(image, prompt=source_prompt if text else None, num_inference_steps=steps,
                                           generator=0)
    out = editor.edit(ws.inversions[key], prompt=target_prompt if text else None, guidance_scale=target_cfg, skip=skip)
    files = [ws.save(out.image, "ddpm", out.recipe)]
    return out.image, None, files, f"DDPM edit ({'inversion reused' if reused else 'image inverted'})"


@dataclass
class DirectionsState:
    key: tuple
    start: object
    directions: object


def directions_editor(ws: Workspace, method: str, model_name: str):
    from regionedit.editors import JICAEditor, RBEEditor

    return ws.editor(RBEEditor if method == "rbe" else JICAEditor, model_name)


def discover_directions(ws: Workspace, value, method: str, regions: str, model_name: str, iterations: int):
    image, drawn = image_and_mask(value)
    iterations = setting("max iterations", iterations, int, 1)
    masks, names = ([drawn], ["brush"]) if drawn is not None else ([], [])
    for spec in [s.strip() for s in (regions or "").split(";") if s.strip()]:
        masks.append(region_source(spec))
        names.append(spec)
    editor = directions_editor(ws, method, model_name)
    start = editor.invert(image)
    if method == "rbe":
        if len(masks) != 1:
            raise RegionEditError(f"RBE takes one region (brush strokes or one spec), got {len(masks)}")
        found = editor.discover(start, masks[0], region_name=names[0], max_iterations=iterations)
    else:
        found = editor.discover(start, masks, region_names=names, max_iterations=iterations)
    state = DirectionsState((image_key(image), editor.model.name), start, found)
    choices = [f"{i}: {label}" for i, label in enumerate(found.labels)]
    return state, choices, f"{method.upper()}: {len(found)} directions in {found.report['seconds']} s"


def apply_direction(ws: Workspace, state: DirectionsState | None, choice: str, strength: float, model_name: str):
    if state is None:
        raise RegionEditError("discover directions first")
    strength = setting("strength", strength)
    try:
        index = int(str(choice).split(":")[0]) if choice else 0
    except ValueError:
        raise RegionEditError(f"unknown direction {choice!r}: pick one from the list") from None
    out = directions_editor(ws, state.directions.method, model_name).apply(state.start, state.directions, index, strength)
    return out.image, None, [ws.save(out.image, "direction", out.recipe)], f"direction {index}, strength {strength:+g}"


# ------------------------------------------------------------------------------------- page
def build(out: str | Path | None = None):
    import gradio as gr

    ws = Workspace(Path(out or tempfile.mkdtemp(prefix="regionedit-app-")))
    ws.out.mkdir(parents=True, exist_ok=True)
    tab_models, sample_images = default_models(), samples()

    def guarded(fn):
        def call(*args, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - gradio's documented idiom
            try:
                return fn(ws, *args)
            except RegionEditError as exc:
                raise gr.Error(str(exc)) from None
        return call

    with gr.Blocks(title="regionedit") as page:
        gr.Markdown("## regionedit: local, region-aware image editing\nDraw a mask with the brush, or say where and what.")
        with gr.Row():
            with gr.Column():
                editor = gr.ImageMask(label="input (brush = mask)", type="pil", format="png", image_mode="RGB",
                                      elem_id="input-editor", sources=("upload", "clipboard"),
                                      brush=gr.Brush(colors=["#ff00ff"], default_size=8))
                with gr.Row():
                    upload = gr.File(label="upload an image file (checked on the server)", type="filepath",
                                     file_types=["image"], elem_id="upload-file")
                    sample = gr.Dropdown(list(sample_images), value=None, label="or pick a sample", elem_id="sample")
            with gr.Column():
                result = gr.Image(label="result", type="pil", format="png", interactive=False, elem_id="result", height=320)
                mask_out = gr.Image(label="mask", type="pil", format="png", interactive=False, elem_id="mask-out", height=160)
                files = gr.File(label="downloads (PNG, mask, RGBA layer)", file_count="multiple", elem_id="downloads")
                status = gr.Markdown(elem_id="status")
        sample.change(lambda name: sample_images.get(name), sample, editor)
        upload.upload(guarded(load_upload), upload, [editor, status])
        history = gr.State([])
        directions = gr.State(None)
        with gr.Tabs():
            with gr.Tab("ZONE (instruction)", id="zone", elem_id="tab-zone"):
                instruction = gr.Textbox(label="instruction", placeholder="make the ball blue", elem_id="zone-instruction")
                zone_model = gr.Textbox(tab_models["zone"], label="instruct model")
                with gr.Row():
                    zone_steps = gr.Slider(2, 50, defaults.ZONE_STEPS, step=1, label="steps", elem_id="zone-steps")
                    single = gr.Checkbox(False, label="single model (no fusion)")
                with gr.Row():
                    apply = gr.Button("apply", variant="primary", elem_id="zone-apply")
                    undo = gr.Button("undo", elem_id="zone-undo")
            with gr.Tab("RDM (locate + target)", id="rdm", elem_id="tab-rdm"):
                with gr.Row():
                    locate = gr.Textbox(label="positioning text (or draw / box)", placeholder="the ball", elem_id="rdm-locate")
                    target = gr.Textbox(label="target text", placeholder="a blue ball", elem_id="rdm-target")
                box = gr.Textbox(label="box x0,y0,x1,y1 (pixels; optional)", elem_id="rdm-box")
                rdm_model = gr.Textbox(tab_models["rdm"], label="text-to-image model")
                with gr.Row():
                    threshold = gr.Slider(1, 254, defaults.RDM_THRESHOLD, step=1, label="mask threshold K (0..255)")
                    rdm_steps = gr.Slider(2, 100, defaults.RDM_STEPS, step=1, label="steps", elem_id="rdm-steps")
                    clip_scale = gr.Slider(0, 500, defaults.RDM_CLIP_SCALE, step=10, label="CLIP guidance scale")
                rdm_run = gr.Button("run RDM", variant="primary", elem_id="rdm-run")
            with gr.Tab("DDPM noise space (prompts)", id="ddpm", elem_id="tab-ddpm"):
                with gr.Row():
                    source_prompt = gr.Textbox(label="source prompt", placeholder="a photo of a horse", elem_id="ddpm-source")
                    target_prompt = gr.Textbox(label="target prompt", placeholder="a photo of a zebra", elem_id="ddpm-target")
                ddpm_model = gr.Textbox(tab_models["ddpm"], label="model")
                with gr.Row():
                    skip = gr.Slider(0, 99, defaults.DDPM_SKIP, step=1, label="skip", elem_id="ddpm-skip")
                    target_cfg = gr.Slider(0, 30, defaults.DDPM_TARGET_GUIDANCE, step=0.5, label="target CFG")
                    ddpm_steps = gr.Slider(10, 200, defaults.DDPM_STEPS, step=10, label="steps", elem_id="ddpm-steps")
                ddpm_run = gr.Button("edit", variant="primary", elem_id="ddpm-run")
            with gr.Tab("RBE / JICA (directions)", id="directions", elem_id="tab-directions"):
                with gr.Row():
                    method = gr.Radio(["rbe", "jica"], value="rbe", label="method", elem_id="dir-method")
                    regions = gr.Textbox(label="regions besides the brush: face:eyes; face:mouth; x0,y0,x1,y1; text:…; segment:x,y",
                                         elem_id="dir-regions")
                dir_model = gr.Textbox(tab_models["rbe"], label="pixel or latent DDPM", elem_id="dir-model")
                iterations = gr.Slider(2, 100, defaults.HSPACE_MAX_ITERATIONS, step=1, label="max iterations", elem_id="dir-iterations")
                discover = gr.Button("discover", variant="primary", elem_id="dir-discover")
                choice = gr.Dropdown([], label="direction", elem_id="dir-choice")
                strength = gr.Slider(-60, 60, defaults.RBE_STRENGTH, step=1, label="strength γ", elem_id="dir-strength")

        outputs = [result, mask_out, files, status]
        apply.click(guarded(run_zone), [editor, instruction, zone_model, zone_steps, single, history],
                    [result, mask_out, files, status, history])
        undo.click(guarded(lambda _ws, h: undo_zone(h)), [history], [result, status, history])
        rdm_run.click(guarded(run_rdm), [editor, locate, target, box, rdm_model, threshold, rdm_steps, clip_scale], outputs)
        ddpm_run.click(guarded(run_ddpm), [editor, source_prompt, target_prompt, skip, target_cfg, ddpm_steps, ddpm_model],
                       outputs)

        def discovered(*args):
            state, labels, message = guarded(discover_directions)(*args)
            return state, gr.Dropdown(choices=labels, value=labels[0] if labels else None), message

        def method_default(chosen: str, model_name: str) -> str:  # a model the user typed stays
            return tab_models[chosen] if model_name in (tab_models["rbe"], tab_models["jica"]) else model_name

        method.change(method_default, [method, dir_model], dir_model)
        discover.click(discovered, [editor, method, regions, dir_model, iterations], [directions, choice, status])
        for trigger in (strength.release, choice.change):
            trigger(guarded(apply_direction), [directions, choice, strength, dir_model], outputs)
    page.workspace = ws
    return page


def serve(host: str = "127.0.0.1", port: int = 7860, out: str | None = None, prevent_thread_lock: bool = False):
    page = build(out)
    page.queue(default_concurrency_limit=1)
    import gradio as gr

    # System fonts: the default theme would fetch Google Fonts, and the page must work offline.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    return page.launch(server_name=host, server_port=port, share=False, max_file_size=f"{MAX_UPLOAD_MB}mb",
                       ssr_mode=False, show_error=True, prevent_thread_lock=prevent_thread_lock, quiet=True,
                       allowed_paths=[], footer_links=[], theme=theme)
