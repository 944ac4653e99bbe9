"""The fuzz campaign (reduced) and regression tests for what the full campaign found."""

import json
import math

import pytest
import torch
from PIL import Image

from regionedit.cli import main
from regionedit.errors import RegionEditError


def test_reduced_campaign_has_no_traceback_and_touches_nothing_outside(tmp_path):
    from regionedit.bench.fuzz import COUNTERS, all_cases, run_campaign, select

    cases = all_cases()
    assert len(cases) >= 500
    result = run_campaign(tmp_path / "campaign", every=16)
    total = result["total"]
    assert set(result["categories"]) == {c.category for c in cases}
    assert total["cases"] == len(select(cases, 16)) and total["refused"] > 0 and total["ok"] > 0
    assert {k: total[k] for k in COUNTERS} == dict.fromkeys(COUNTERS, 0), result["failing"]
    assert result["entries"]["cli"] and result["entries"]["batch"] and result["entries"]["app"] and result["entries"]["api"]


def test_the_campaign_counts_what_it_should(tmp_path):
    """The harness itself: an escaping exception, a modified input and a stray file are each counted."""
    from regionedit.bench.fuzz import Case, run_campaign

    def crash(dirs, state):
        raise KeyError("boom")

    def modify(dirs, state):
        (dirs.inp / "photo.png").write_bytes(b"changed")
        (dirs.inp.parent / "stray.txt").write_text("outside")

    cases = [Case("probe", "crash", "api", crash), Case("probe", "modify", "api", modify, setup=lambda d: d.copy("photo.png")),
             Case("probe", "accepts nan", "api", lambda d, s: None, refuse=True)]
    total = run_campaign(tmp_path / "c", cases=cases, fixtures=False)["total"]
    assert (total["tracebacks"], total["inputs_modified"], total["files_outside"], total["accepted_bad_values"]) == (1, 1, 1, 1)


@pytest.fixture
def image_file(tmp_path, photo):
    path = tmp_path / "photo.png"
    photo.resize((32, 32)).save(path)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("regionedit: error:")]


@pytest.mark.parametrize(("argv", "named"), [
    (["invert", "{img}", "-o", "{out}/i.safetensors", "--model", "tiny/sd", "--prompt", "x", "--cfg", "nan"], "--cfg"),
    (["edit", "zone", "{img}", "make it blue", "-o", "{out}/z.png", "--model", "tiny/ip2p", "--threshold", "inf"],
     "--threshold"),
    (["edit", "rdm", "{img}", "--box", "0,0,9,9", "--target", "x", "-o", "{out}/r.png", "--model", "tiny/sd",
      "--nerp-mse", "nan"], "--nerp-mse"),
    (["edit", "rdm", "{img}", "--box", "0,0,9,9", "--target", "x", "-o", "{out}/r.png", "--model", "tiny/sd",
      "--cutouts", "0", "--steps", "2"], "cutouts"),
    (["edit", "rdm", "{img}", "--box", "0,0,nan,9", "--target", "x", "-o", "{out}/r.png", "--model", "tiny/sd"], "--box"),
    (["discover", "rbe", "{img}", "--mask", "4,4,20,20", "-o", "{out}/d.safetensors", "--model", "tiny/pixel-ddpm",
      "--max-iterations", "0", "--steps", "4"], "max_iterations"),
    (["discover", "rbe", "{img}", "--mask", "4,4,20,20", "-o", "{out}/d.safetensors", "--model", "tiny/pixel-ddpm",
      "--timestep", "5000", "--steps", "4"], "timestep"),
    (["invert", "{img}", "-o", "{out}/i.safetensors", "--model", "tiny/sd", "--prompt", "x", "--steps", "100000"],
     "num_inference_steps"),
    (["invert", "{img}", "-o", "{out}/i.safetensors", "--model", "tiny/sd", "--prompt", "x", "--steps", "2",
      "--seed", str(2**70)], "seed"),
])
def test_bad_numbers_are_one_line_errors_naming_the_argument(capsys, tmp_path, image_file, argv, named):
    argv = [a.format(img=image_file, out=tmp_path) for a in argv]
    code, errors = run(capsys, *argv, "-q")
    assert code == 2 and len(errors) == 1 and named in errors[0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_library_edges_refuse_nan_inf_and_out_of_range(sd_model, ip2p_model, pixel_model, photo):
    from regionedit.core.inversion import invert
    from regionedit.core.schedule import Schedule
    from regionedit.masks import box_mask
    from regionedit.methods import rdm, zone
    from regionedit.methods.hspace_edit import start_from_image

    image, box = photo.resize((32, 32)), box_mask((0, 0, 9, 9), (32, 32))
    calls = {
        "guidance_scale": lambda: sd_model.denoiser("x", math.nan),
        "num_inference_steps": lambda: Schedule.from_scheduler(sd_model.scheduler, 10**6),
        "seed": lambda: invert(sd_model, image, prompt="x", num_inference_steps=2, seed=-1, progress=False),
        "max_side": lambda: invert(sd_model, image, prompt="x", num_inference_steps=2, max_side=0, progress=False),
        "cutouts": lambda: rdm.edit(sd_model, image, "x", mask=box, num_inference_steps=2, cutouts=0, progress=False),
        "feather": lambda: rdm.edit(sd_model, image, "x", mask=box, num_inference_steps=2, feather=10**9, progress=False),
        "dilation": lambda: zone.edit(ip2p_model, image, "make it blue", num_inference_steps=2, dilation=10**9,
                                      progress=False),
        "threshold": lambda: zone.edit(ip2p_model, image, "make it blue", num_inference_steps=2, threshold=math.nan,
                                       progress=False),
        "timestep": lambda: start_from_image(pixel_model, image, timestep=-3, num_inference_steps=4),
        "box": lambda: box_mask((0, 0, math.inf, 5), (32, 32)),
    }
    for name, call in calls.items():
        with pytest.raises(RegionEditError, match=name) as caught:
            call()
        assert "\n" not in str(caught.value)


def test_subspace_iteration_refuses_zero_iterations(pixel_model, photo):
    from regionedit.masks import box_mask
    from regionedit.methods import rbe
    from regionedit.methods.hspace_edit import start_from_image

    start = start_from_image(pixel_model, photo.resize((32, 32)), num_inference_steps=4)
    for kwargs in ({"max_iterations": 0}, {"tolerance": math.nan}):
        with pytest.raises(RegionEditError, match=next(iter(kwargs))):
            rbe.discover(pixel_model, start, box_mask((4, 4, 20, 20), (32, 32)), k=1, complement_rank=1, **kwargs)


def _tamper(path, edit):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as handle:
        meta, tensors = dict(handle.metadata()), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    edit(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def test_damaged_inversion_and_directions_files_are_refused(capsys, tmp_path, image_file, sd_model):
    from regionedit.core.inversion import DDPMInversion, invert
    from regionedit.methods.directions import Directions

    inv = tmp_path / "inv.safetensors"
    invert(sd_model, Image.open(image_file), prompt="x", num_inference_steps=3, progress=False).save(inv)
    edits = [lambda t, m: m.update(fit="{oops"), lambda t, m: t.update(zs=t["zs"][:, :, :2].contiguous()),
             lambda t, m: t.pop("timesteps"), lambda t, m: m.update(eta="nan")]
    for edit in edits:
        damaged = tmp_path / "damaged.safetensors"
        damaged.write_bytes(inv.read_bytes())
        _tamper(damaged, edit)
        with pytest.raises(RegionEditError, match="damaged or was edited"):
            DDPMInversion.load(damaged)
    code, _ = run(capsys, "discover", "rbe", image_file, "--mask", "4,4,20,20", "-o", tmp_path / "d.safetensors",
                  "--model", "tiny/pixel-ddpm", "--steps", "4", "--max-iterations", "2", "--k", "1", "--r", "1", "-q")
    assert code == 0
    for edit in (lambda t, m: m.update(metadata="{}"), lambda t, m: m.update(metadata="[1]"),
                 lambda t, m: t.update(vectors=torch.full_like(t["vectors"], math.nan)),
                 lambda t, m: m.update(metadata=json.dumps({**json.loads(m["metadata"]), "labels": []}))):
        damaged = tmp_path / "dirs-damaged.safetensors"
        damaged.write_bytes((tmp_path / "d.safetensors").read_bytes())
        _tamper(damaged, edit)
        with pytest.raises(RegionEditError, match="damaged or was edited"):
            Directions.load(damaged)


def test_manifest_oddities_are_reported_per_line(tmp_path, photo):
    from regionedit.batch import read_manifest, run_local

    photo.save(tmp_path / "photo.png")
    good = {"id": "ok", "method": "zone", "image": "photo.png", "instruction": "make it blue"}
    lines = [b'{"id": "a\xff", "method": "zone"}', json.dumps({**good, "id": ".."}).encode(),
             json.dumps({**good, "id": "b", "image": 5}).encode(),
             json.dumps({"id": "c", "method": "rdm", "image": "photo.png", "target": "x", "box": "1,2,3,4"}).encode(),
             json.dumps({"id": "d", "method": "rbe", "image": "photo.png", "directions": "x", "index": "first"}).encode(),
             json.dumps(good).encode()]
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\n".join(lines))
    jobs, problems = read_manifest(manifest)
    assert [j.id for j in jobs] == ["ok"] and len(problems) == 5
    assert "not UTF-8" in problems[0] and "'.'" in problems[1] and "'image'" in problems[2] and "'box'" in problems[3]
    with pytest.raises(RegionEditError, match="batch_size"):
        run_local(manifest, tmp_path / "out", batch_size=0, progress=False)
    with pytest.raises(RegionEditError, match="output folder"):
        run_local(manifest, tmp_path / "photo.png", progress=False)


def test_batch_downscales_large_images_like_the_cli(tmp_path):
    from regionedit.batch import run_local

    Image.new("RGB", (400, 300), (10, 200, 30)).save(tmp_path / "big.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "method": "zone", "image": "big.png", "instruction": "make it red",
                                                  "model": "tiny/ip2p", "params": {"num_inference_steps": 2, "model2": "none"}}))
    summary = run_local(tmp_path / "m.jsonl", tmp_path / "out", device="cpu", progress=False)
    assert summary["done"] == 1
    assert max(Image.open(tmp_path / "out" / "outputs" / "a.png").size) == 64  # tiny/ip2p's native resolution


@pytest.fixture
def session(tmp_path, image_file, capsys):
    folder = tmp_path / "session"
    assert main(["session", "new", str(folder), str(image_file), "-q"]) == 0
    assert main(["session", "apply", str(folder), "make it blue", "--model", "tiny/ip2p", "--single", "--steps", "2", "-q"]) == 0
    capsys.readouterr()
    return folder


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", ["not-json", "turns-missing", "turn-escapes", "turn-absolute", "image-deleted", "undone-file"])
def test_damaged_sessions_are_refused_and_left_as_they_were(capsys, tmp_path, session, damage):
    victim = tmp_path / "photo.png"
    state = json.loads((session / "session.json").read_text())
    if damage == "not-json":
        (session / "session.json").write_text(json.dumps(state)[:30])
    elif damage == "turns-missing":
        (session / "session.json").write_text(json.dumps({k: v for k, v in state.items() if k != "turns"}))
    elif damage in ("turn-escapes", "turn-absolute"):
        state["turns"][0]["image"] = "../photo.png" if damage == "turn-escapes" else str(victim)
        (session / "session.json").write_text(json.dumps(state))
    elif damage == "image-deleted":
        (session / "turn-001.png").unlink()
    else:
        (session / "undone").write_text("x")
    before, victim_bytes = _files(session), victim.read_bytes()
    verb = "undo" if damage in ("undone-file", "turn-escapes", "turn-absolute") else "apply"
    extra = ["make it red", "--model", "tiny/ip2p", "--single", "--steps", "2"] if verb == "apply" else []
    code, errors = run(capsys, "session", verb, session, *extra, "-q")
    assert code == 2 and len(errors) == 1, errors
    assert _files(session) == before and victim.read_bytes() == victim_bytes


def test_session_new_into_a_file_is_refused(capsys, tmp_path, image_file):
    (tmp_path / "file").write_text("x")
    code, errors = run(capsys, "session", "new", tmp_path / "file", image_file, "-q")
    assert code == 2 and "is a file" in errors[0]


def test_app_handlers_check_slider_values(tmp_path, photo):
    from regionedit.app import (
        DirectionsState,
        Workspace,
        apply_direction,
        load_upload,
        run_ddpm,
        run_zone,
    )

    ws = Workspace(tmp_path)
    value = {"background": photo.resize((32, 32)), "layers": []}
    for steps in (None, math.nan, -1):
        with pytest.raises(RegionEditError, match="steps"):
            run_zone(ws, value, "make it blue", "tiny/ip2p", steps, True, [])
    with pytest.raises(RegionEditError, match="target CFG"):
        run_ddpm(ws, value, "x", "y", 1, math.inf, 3, "tiny/sd")
    with pytest.raises(RegionEditError, match="no file"):
        load_upload(ws, str(tmp_path / "gone.png"))
    with pytest.raises(RegionEditError, match="direction"):
        apply_direction(ws, DirectionsState((), None, None), "abc: x", 1.0, "tiny/pixel-ddpm")
    assert list(tmp_path.iterdir()) == []
