"""The command line: every bad input is one line on stderr and exit code 2; outputs carry recipes."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from regionedit.cli import main
from regionedit.images import read_recipe


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("regionedit: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def image_file(tmp_path, photo):
    path = tmp_path / "photo.png"
    photo.save(path)
    return path


SD = ["--model", "tiny/sd", "--steps", "8", "-q"]
PIXEL = ["--model", "tiny/pixel-ddpm", "--steps", "8", "-q"]


def test_invert_then_edit_from_the_inversion_file(capsys, image_file, tmp_path):
    inv = tmp_path / "inv.safetensors"
    code, out, err = run(capsys, "invert", str(image_file), "-o", str(inv), "--prompt", "an astronaut", *SD)
    assert code == 0 and inv.exists(), err
    out_png = tmp_path / "edit.png"
    code, out, err = run(capsys, "edit", "ddpm", "--inversion", str(inv), "--target-prompt", "a cat", "--skip", "3",
                         "-o", str(out_png), "--model", "tiny/sd", "-q")
    assert code == 0, err
    recipe = read_recipe(out_png)
    assert recipe["method"] == "ddpm_edit" and recipe["target_prompt"] == "a cat" and recipe["skip"] == 3
    assert recipe["source_prompt"] == "an astronaut" and recipe["seed"] == 0 and recipe["model"] == "tiny/sd"
    assert Image.open(out_png).size == (64, 64)


def test_edit_straight_from_an_image_with_noise_map_shift(capsys, image_file, tmp_path):
    out_png = tmp_path / "shift.png"
    code, _, err = run(capsys, "edit", "ddpm", str(image_file), "--skip", "0", "--shift", "4,0", "-o", str(out_png), *PIXEL)
    assert code == 0, err
    assert read_recipe(out_png)["shift"] == "4,0"


def test_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "invert", str(tmp_path / "missing.png"), "-o", str(tmp_path / "i.st"), *PIXEL)
    assert_one_line_error(code, err, "image not found")


def test_unreadable_file(capsys, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x00garbage")
    code, _, err = run(capsys, "invert", str(bad), "-o", str(tmp_path / "i.st"), *PIXEL)
    assert_one_line_error(code, err, "cannot read image")


@pytest.mark.parametrize(
    "array,note",
    [
        (np.full((40, 40), 90, np.uint8), "grayscale converted"),
        (np.full((40, 40, 4), 90, np.uint8), "alpha channel dropped"),
        (np.full((40, 40), 30000, np.uint16), "high-bit-depth grayscale"),
    ],
)
def test_unusual_modes_are_converted_with_a_note(capsys, tmp_path, array, note):
    path = tmp_path / "odd.png"
    Image.fromarray(array).save(path)
    code, _, err = run(capsys, "invert", str(path), "-o", str(tmp_path / "i.safetensors"), *PIXEL)
    assert code == 0 and f"regionedit: note: {path}: {note}" in err


def test_sizes_not_divisible_are_padded_with_a_note(capsys, tmp_path):
    path = tmp_path / "odd.png"
    Image.new("RGB", (50, 30), (200, 10, 10)).save(path)
    out_png = tmp_path / "o.png"
    code, _, err = run(capsys, "edit", "ddpm", str(path), "--source-prompt", "red", "--target-prompt", "blue",
                       "--skip", "2", "-o", str(out_png), *SD)
    assert code == 0 and "padded to 64×32" in err
    assert Image.open(out_png).size == (50, 30)


def test_large_images_are_downscaled_to_the_native_size_with_a_note(capsys, tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (256, 128)).save(path)
    code, _, err = run(capsys, "invert", str(path), "-o", str(tmp_path / "i.safetensors"), "--prompt", "", *SD)
    assert code == 0 and "downscaled to 64×32" in err


def test_skip_not_below_steps(capsys, image_file, tmp_path):
    code, _, err = run(capsys, "edit", "ddpm", str(image_file), "--skip", "8", "--target-prompt", "x",
                       "--source-prompt", "y", "-o", str(tmp_path / "o.png"), *SD)
    assert_one_line_error(code, err, "--skip must be smaller", "(8)")


def test_negative_cfg(capsys, image_file, tmp_path):
    code, _, err = run(capsys, "edit", "ddpm", str(image_file), "--target-cfg", "-1", "--target-prompt", "x",
                       "--source-prompt", "y", "-o", str(tmp_path / "o.png"), *SD)
    assert_one_line_error(code, err, "--target-cfg must be ≥ 0")
    code, _, err = run(capsys, "invert", str(image_file), "--cfg", "-3", "--prompt", "y", "-o", str(tmp_path / "i"), *SD)
    assert_one_line_error(code, err, "--cfg must be ≥ 0")


def test_missing_prompt_for_a_text_model(capsys, image_file, tmp_path):
    code, _, err = run(capsys, "invert", str(image_file), "-o", str(tmp_path / "i.safetensors"), *SD)
    assert_one_line_error(code, err, "text-conditional", "--prompt")
    code, _, err = run(capsys, "edit", "ddpm", str(image_file), "--source-prompt", "a", "--skip", "2",
                       "-o", str(tmp_path / "o.png"), *SD)
    assert_one_line_error(code, err, "text-conditional", "--target-prompt")


def test_unknown_model_id_offline(capsys, image_file, tmp_path):
    code, _, err = run(capsys, "invert", str(image_file), "-o", str(tmp_path / "i.st"), "--model", "someone/unknown-model")
    assert_one_line_error(code, err, "someone/unknown-model", "not available offline")


def test_output_may_not_overwrite_the_input(capsys, image_file):
    before = image_file.read_bytes()
    code, _, err = run(capsys, "edit", "ddpm", str(image_file), "-o", str(image_file), "--target-prompt", "x",
                       "--source-prompt", "y", "--skip", "2", *SD)
    assert_one_line_error(code, err, "is an input file")
    assert image_file.read_bytes() == before


def test_usage_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as info:
        main(["invert"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "required" in err


def test_models_lists_tiny_and_explains_hub_ids(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "tiny/sd" in out and "hub id" in out
    code, out, _ = run(capsys, "models", "--json")
    from regionedit.models.tiny import TINY_BUILDERS

    assert set(json.loads(out)["tiny"]) == set(TINY_BUILDERS) >= {"tiny/pixel-ddpm", "tiny/sd", "tiny/ip2p", "tiny/clipseg"}


def test_console_script_runs_as_a_real_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "regionedit.cli", "edit", "ddpm", str(tmp_path / "none.png"), "-o", str(tmp_path / "o.png"),
         "--model", "tiny/sd"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"regionedit: error: image not found: {tmp_path / 'none.png'}"]


def test_commands_default_to_the_embedded_model_of_their_task(monkeypatch, tmp_path):
    from regionedit.cli import _fill_default_model, build_parser
    from regionedit.errors import RegionEditError
    from regionedit.models import loading

    shipped = {name: tmp_path for name in ("toy/scenes-instruct", "toy/scenes-t2i", "toy/faces-ddpm", "toy/faces-ldm")}
    monkeypatch.setattr(loading, "embedded_models", lambda: shipped)

    def model_of(*argv: str) -> str:
        args = build_parser().parse_args(list(argv))
        _fill_default_model(args)
        return args.model

    assert model_of("edit", "zone", "a.png", "make the ball red", "-o", "b.png") == "toy/scenes-instruct"
    assert model_of("session", "apply", "s", "make the ball red") == "toy/scenes-instruct"
    assert model_of("edit", "rdm", "a.png", "--target", "a red ball", "--box", "1,1,9,9", "-o", "b.png") == "toy/scenes-t2i"
    assert model_of("edit", "ddpm", "a.png", "--target-prompt", "a red ball", "-o", "b.png") == "toy/scenes-t2i"
    assert model_of("edit", "ddpm", "a.png", "--shift", "4,0", "-o", "b.png") == "toy/faces-ddpm"  # no text: pixel DDPM
    assert model_of("invert", "a.png", "-o", "a.safetensors") == "toy/faces-ddpm"
    assert model_of("discover", "jica", "a.png", "--mask", "face:eyes", "--mask", "face:mouth", "-o", "d.safetensors") == "toy/faces-ddpm"
    assert model_of("discover", "rbe", "a.png", "--mask", "face:eyes", "-o", "d.safetensors") == "toy/faces-ldm"
    assert model_of("edit", "zone", "a.png", "x", "-o", "b.png", "--model", "tiny/ip2p") == "tiny/ip2p"  # names still win
    del shipped["toy/scenes-instruct"]
    with pytest.raises(RegionEditError, match="the default toy/scenes-instruct is not in this installation: give a model"):
        model_of("edit", "zone", "a.png", "make the ball red", "-o", "b.png")


def _parser_defaults(*command: str) -> dict:
    """The defaults of `regionedit COMMAND…`'s options, by dest."""
    import argparse

    from regionedit.cli import build_parser

    parser = build_parser()
    for name in command:
        (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = subparsers.choices[name]
    return {action.dest: action.default for action in parser._actions}


def _signature_defaults(function) -> dict:
    import inspect

    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _assert_same_defaults(cli: dict, library: dict, names: dict[str, str], where: str) -> None:
    """Each CLI option (dest) has the library parameter's default (and the same type of number)."""
    for dest, parameter in names.items():
        ours, theirs = cli[dest], library[parameter]
        assert ours == theirs and type(ours) is type(theirs), f"{where}: --{dest} {ours!r} ≠ {parameter}={theirs!r}"


def test_cli_defaults_are_the_editors_defaults():
    """One place (regionedit.defaults) defines every default: the CLI's options cannot drift from the
    editors' and methods' keyword arguments."""
    from regionedit import defaults
    from regionedit.editors import DDPMEditor, JICAEditor, RBEEditor, RDMEditor, ZoneEditor
    from regionedit.methods import actions, jica, rbe

    invert = _signature_defaults(DDPMEditor.invert)
    _assert_same_defaults(_parser_defaults("invert"), invert, {
        "steps": "num_inference_steps", "eta": "eta", "cfg": "guidance_scale", "batch_size": "batch_size"}, "invert")
    ddpm = _parser_defaults("edit", "ddpm")
    _assert_same_defaults(ddpm, _signature_defaults(DDPMEditor.__call__), {
        "steps": "num_inference_steps", "eta": "eta", "source_cfg": "source_guidance_scale"}, "edit ddpm")
    _assert_same_defaults(ddpm, invert, {"batch_size": "batch_size"}, "edit ddpm")
    edit = _signature_defaults(DDPMEditor.edit)
    _assert_same_defaults(ddpm, edit, {"blend_threshold": "blend_threshold", "skip": "skip", "target_cfg": "guidance_scale"},
                          "edit ddpm")  # skip and target CFG: None, resolved by method (below)

    zone_call = _signature_defaults(ZoneEditor.__call__)
    for command in (("edit", "zone"), ("session", "apply")):
        _assert_same_defaults(_parser_defaults(*command), zone_call, {
            "steps": "num_inference_steps", "cfg": "guidance_scale", "image_cfg": "image_guidance_scale"}, " ".join(command))
        assert _parser_defaults(*command)["threshold"] == zone_call["threshold"]  # float option, int default
    _assert_same_defaults(_parser_defaults("train-classifier"), _signature_defaults(actions.train_classifier),
                          {"train": "train_count", "test": "test_count"}, "train-classifier")

    _assert_same_defaults(_parser_defaults("edit", "rdm"), _signature_defaults(RDMEditor.__call__), {
        "steps": "num_inference_steps", "cfg": "guidance_scale", "threshold": "threshold", "dilate": "dilation",
        "clip_scale": "clip_guidance_scale", "cutouts": "cutouts", "nerp_mse": "nerp_mse", "nerp_lpips": "nerp_lpips",
        "feather": "feather", "eta": "eta"}, "edit rdm")

    search = {"space": "space", "max_iterations": "max_iterations", "tolerance": "tolerance", "jvp": "jvp"}
    for method, editor, find, own in (
            ("rbe", RBEEditor, rbe.discover, {"k": "k", "r": "complement_rank"}),
            ("jica", JICAEditor, jica.discover, {name: name for name in ("svd_rank", "joint_rank", "individual_rank")})):
        discover = _parser_defaults("discover", method)
        _assert_same_defaults(discover, _signature_defaults(editor.invert),
                              {"timestep": "timestep", "steps": "num_inference_steps", "inversion": "inversion"},
                              f"discover {method}")
        _assert_same_defaults(discover, _signature_defaults(editor.discover), own, f"discover {method}")
        _assert_same_defaults(discover, _signature_defaults(find), {**search, **own}, f"discover {method}")
        applied = _parser_defaults("edit", method)
        _assert_same_defaults(applied, _signature_defaults(editor.apply),
                              {"index": "index", "strength": "strength", "eta": "eta", "inversion": "inversion"},
                              f"edit {method}")
        strip = _signature_defaults(editor.strip)["strengths"]
        assert tuple(float(s) for s in applied["strengths"].split(",")) == tuple(strip), f"edit {method} --strengths"

    # `edit ddpm` resolves --skip and --target-cfg as the editor does, and each method module's
    # DEFAULT_* names are those of regionedit.defaults.
    from regionedit.core import inversion, jacobian
    from regionedit.methods import ddpm_edit, hspace_edit, p2p, rdm, zone

    for module, table in (
            (inversion, {"STEPS": "DDPM_STEPS", "SOURCE_GUIDANCE": "DDPM_SOURCE_GUIDANCE", "ETA": "DDPM_ETA"}),
            (ddpm_edit, {"SKIP": "DDPM_SKIP", "TARGET_GUIDANCE": "DDPM_TARGET_GUIDANCE"}),
            (p2p, {"SKIP": "P2P_SKIP", "TARGET_GUIDANCE": "P2P_TARGET_GUIDANCE", "CROSS_REPLACE": "P2P_CROSS_REPLACE",
                   "SELF_REPLACE": "P2P_SELF_REPLACE", "BLEND_THRESHOLD": "P2P_BLEND_THRESHOLD"}),
            (zone, {"STEPS": "ZONE_STEPS", "TEXT_GUIDANCE": "ZONE_TEXT_GUIDANCE", "IMAGE_GUIDANCE": "ZONE_IMAGE_GUIDANCE",
                    "THRESHOLD": "ZONE_THRESHOLD"}),
            (rdm, {"STEPS": "RDM_STEPS", "GUIDANCE": "RDM_GUIDANCE", "CLIP_SCALE": "RDM_CLIP_SCALE",
                   "CUTOUTS": "RDM_CUTOUTS", "NERP_MSE": "RDM_NERP_MSE", "NERP_LPIPS": "RDM_NERP_LPIPS"}),
            (hspace_edit, {"TIMESTEP": "HSPACE_TIMESTEP", "STEPS": "HSPACE_STEPS", "JVP": "HSPACE_JVP"}),
            (jacobian, {"MAX_ITERATIONS": "HSPACE_MAX_ITERATIONS", "TOLERANCE": "HSPACE_TOLERANCE"}),
            (rbe, {"K": "RBE_K", "COMPLEMENT_RANK": "RBE_COMPLEMENT_RANK", "STRENGTH": "RBE_STRENGTH"}),
            (jica, {"SVD_RANK": "JICA_SVD_RANK", "JOINT_RANK": "JICA_JOINT_RANK", "INDIVIDUAL_RANK": "JICA_INDIVIDUAL_RANK"})):
        for name, source in table.items():
            assert getattr(module, f"DEFAULT_{name}") == getattr(defaults, source), f"{module.__name__}.DEFAULT_{name}"
    assert (p2p.DDIM_SKIP, p2p.DDIM_CROSS_REPLACE, p2p.DDIM_SELF_REPLACE) == (
        defaults.P2P_DDIM_SKIP, defaults.P2P_DDIM_CROSS_REPLACE, defaults.P2P_DDIM_SELF_REPLACE)


def test_building_the_parser_imports_no_model_library():
    """`regionedit --help` stays fast: the parser (and regionedit.defaults) load no torch or diffusers."""
    code = ("import sys; from regionedit.cli import build_parser; build_parser(); "
            "print(sorted({'torch', 'diffusers', 'transformers', 'gradio'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
