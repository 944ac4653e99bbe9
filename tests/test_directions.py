"""h-space split, matrix-free Jacobians, subspace iteration, RBE, JICA, direction files and CLI."""

import json

import pytest
import torch
from diffusers.models.attention_processor import Attention

from regionedit.cli import main
from regionedit.core import hspace
from regionedit.core.jacobian import principal_angles, top_singular
from regionedit.errors import RegionEditError
from regionedit.images import read_recipe
from regionedit.methods import jica, rbe
from regionedit.methods.directions import Directions
from regionedit.methods.hspace_edit import (
    jacobian,
    sample_with_direction,
    start_from_image,
    to_pixels,
)

SIZE = 16


@pytest.fixture(scope="module")
def face_image():
    from regionedit.toyworld.faces import generate_faces

    return generate_faces([7], size=SIZE).images


@pytest.fixture(scope="module")
def start(pixel_model, face_image):
    return start_from_image(pixel_model, face_image, timestep=500, num_inference_steps=40)


def eye_mask(size=SIZE):
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : size // 2, size // 4 : 3 * size // 4] = 1
    return mask


# ---------------------------------------------------------------------------- h-space split
@pytest.mark.parametrize("name,shape", [("pixel_model", (2, 3, 16, 24)), ("sd_model", (2, 4, 8, 12)),
                                        ("sd_model", (2, 4, 10, 6)), ("ip2p_model", (2, 8, 8, 8))])
def test_decoder_of_encoder_equals_the_full_forward(name, shape, request):
    model = request.getfixturevalue(name)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([700, 30])
    text = model.encode_prompt(["a red ball", "a box"]) if model.is_text_conditional else None
    with torch.no_grad():
        full = model.unet(x, t, encoder_hidden_states=text).sample if text is not None else model.unet(x, t).sample
        state = hspace.encode(model.unet, x, t, text)
        split = hspace.decode(model.unet, state.h, state)
    assert torch.allclose(full, split, atol=1e-5)


def test_autodiff_safe_restores_processors_and_hooks_even_after_errors(pixel_model):
    unet = pixel_model.unet
    before = [type(m.processor) for m in unet.modules() if isinstance(m, Attention)]
    hooks_before = sum(len(m._forward_pre_hooks) for m in unet.modules())
    with pytest.raises(RuntimeError, match="boom"):
        with hspace.autodiff_safe(unet):
            assert all(type(m.processor).__name__ == "AttnProcessor" for m in unet.modules() if isinstance(m, Attention))
            raise RuntimeError("boom")
    assert [type(m.processor) for m in unet.modules() if isinstance(m, Attention)] == before
    assert sum(len(m._forward_pre_hooks) for m in unet.modules()) == hooks_before


# ---------------------------------------------------------------------------- Jacobians
@pytest.fixture(scope="module")
def dense(pixel_model, start):
    mask = eye_mask()
    op = jacobian(pixel_model, start, mask, method="autodiff")
    matrix = torch.func.jacrev(lambda h: (mask * op.fn(h)).flatten())(op.point).reshape(3 * SIZE * SIZE, -1)
    return mask, matrix


@pytest.mark.parametrize("method,tolerance", [("autodiff", 1e-4), ("finite-difference", 5e-3)])
def test_batched_jvp_and_vjp_match_the_dense_jacobian(pixel_model, start, dense, method, tolerance):
    mask, matrix = dense
    op = jacobian(pixel_model, start, mask, method=method)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(3, *op.in_shape, generator=g)
    w = torch.randn(3, 3, SIZE, SIZE, generator=g)
    expected_jv = (matrix @ v.reshape(3, -1).T).T
    assert ((op.jvp(v).reshape(3, -1) - expected_jv).norm() / expected_jv.norm()) < tolerance
    expected_vjp = (w * mask).reshape(3, -1) @ matrix
    assert torch.allclose(op.vjp(w).reshape(3, -1), expected_vjp, atol=1e-5)


@pytest.mark.parametrize("method", ["autodiff", "finite-difference"])
def test_subspace_iteration_matches_the_dense_svd(pixel_model, start, dense, method):
    mask, matrix = dense
    _, values, vh = torch.linalg.svd(matrix, full_matrices=False)
    found = top_singular(jacobian(pixel_model, start, mask, method=method), 3)
    assert torch.allclose(found.singular_values, values[:3], rtol=0.01), (found.singular_values, values[:3])
    assert principal_angles(found.vectors, vh[:3]).max() < 5.0
    vectors = found.vectors.reshape(3, -1)
    assert torch.allclose(vectors @ vectors.T, torch.eye(3), atol=1e-5)  # each deflated against the others
    with pytest.raises(RegionEditError, match="k must be in"):
        top_singular(jacobian(pixel_model, start, mask), matrix.shape[1] + 1)


def test_rbe_confinement_removes_the_complement_when_r_covers_its_spectrum(pixel_model, start):
    mask = torch.ones(1, 1, SIZE, SIZE)
    mask[..., 0, :2] = 0  # the complement is two pixels: J_C has rank ≤ 6
    directions = rbe.discover(pixel_model, start, mask, k=2, complement_rank=6, max_iterations=100)
    report = directions.report
    assert max(report["leak_after"]) <= 0.05, report
    assert min(report["leak_before"]) > max(report["leak_after"])
    norms = directions.vectors.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.ones(2), atol=1e-5)


# ---------------------------------------------------------------------------- JIVE
def test_jive_recovers_planted_joint_and_individual_structure():
    g = torch.Generator().manual_seed(3)
    n = 40
    basis = torch.linalg.qr(torch.randn(n, 6, generator=g))[0]
    joint, individual = basis[:, :2], [basis[:, 2:4], basis[:, 4:6]]
    blocks = [torch.randn(10, 2, generator=g) @ joint.T * 3 + torch.randn(10, 2, generator=g) @ ind.T
              + 0.01 * torch.randn(10, n, generator=g) for ind in individual]
    result = jica.jive(blocks, joint_rank=2, individual_rank=2)
    assert principal_angles(result.joint, joint.T).max() < 5.0
    for found, planted in zip(result.individual, individual, strict=True):
        assert principal_angles(found, planted.T).max() < 5.0
        assert (found @ result.joint.T).abs().max() < 1e-5  # individual ⟂ joint
    with pytest.raises(RegionEditError, match="too large"):
        jica.jive(blocks, joint_rank=25, individual_rank=2)


def test_jica_gives_joint_then_individual_directions(pixel_model, start):
    mouth = torch.zeros(1, 1, SIZE, SIZE)
    mouth[..., 11:14, 5:11] = 1
    directions = jica.discover(pixel_model, start, [eye_mask(), mouth], region_names=["eyes", "mouth"],
                               svd_rank=5, joint_rank=1, individual_rank=2, max_iterations=20)
    assert directions.labels == ["joint 0", "individual eyes 0", "individual eyes 1", "individual mouth 0", "individual mouth 1"]
    flat = directions.vectors.flatten(1)
    assert (flat[1:] @ flat[0]).abs().max() < 1e-4
    with pytest.raises(RegionEditError, match="at least two regions"):
        jica.discover(pixel_model, start, [eye_mask()])
    with pytest.raises(RegionEditError, match="must not exceed the SVD rank"):
        jica.discover(pixel_model, start, [eye_mask(), mouth], svd_rank=3, joint_rank=2, individual_rank=2)


# ---------------------------------------------------------------------------- editing and files
def test_editing_along_a_direction(pixel_model, start, face_image):
    directions = rbe.discover(pixel_model, start, eye_mask(), k=1, complement_rank=2, max_iterations=10)
    u = directions.vector(0)
    reference = sample_with_direction(pixel_model, start, None, 0.0)
    assert torch.equal(sample_with_direction(pixel_model, start, u, 0.0), reference)
    edited = sample_with_direction(pixel_model, start, u, 30.0)
    assert (edited - reference).abs().max() > 1e-3
    assert not torch.equal(sample_with_direction(pixel_model, start, u, 30.0, asymmetric=True), edited)
    # Through the edit-friendly inversion, γ = 0 gives back the input exactly.
    exact = start_from_image(pixel_model, face_image, timestep=500, num_inference_steps=40, inversion="ddpm")
    back = to_pixels(pixel_model, exact, sample_with_direction(pixel_model, exact, u, 0.0))
    assert (back - face_image).abs().max() < 1e-4
    x_dirs = rbe.discover(pixel_model, start, eye_mask(), k=1, complement_rank=1, space="x", max_iterations=5)
    assert x_dirs.vectors.shape[1:] == start.x_t.shape[1:]
    assert (sample_with_direction(pixel_model, start, x_dirs.vector(0), 5.0, space="x") - reference).abs().max() > 1e-3


def test_direction_files_round_trip_and_refuse_other_models(pixel_model, start, tmp_path):
    directions = rbe.discover(pixel_model, start, eye_mask(), k=2, complement_rank=2, max_iterations=5, region_name="eyes")
    path = directions.save(tmp_path / "dirs.safetensors")
    loaded = Directions.load(path)
    assert torch.equal(loaded.vectors, directions.vectors) and loaded.labels == directions.labels
    assert loaded.timestep == 500 and loaded.report["leak_after"] == directions.report["leak_after"]
    loaded.check_compatible("tiny/pixel-ddpm", tuple(directions.vectors.shape[1:]))
    with pytest.raises(RegionEditError, match="found with model"):
        loaded.check_compatible("tiny/sd", tuple(directions.vectors.shape[1:]))
    with pytest.raises(RegionEditError, match="shape"):
        loaded.check_compatible("tiny/pixel-ddpm", (64, 4, 4))
    with pytest.raises(RegionEditError, match="out of range"):
        loaded.vector(5)


def test_bad_regions(pixel_model, start):
    with pytest.raises(RegionEditError, match="empty"):
        rbe.discover(pixel_model, start, torch.zeros(1, 1, SIZE, SIZE))
    with pytest.raises(RegionEditError, match="whole image"):
        rbe.discover(pixel_model, start, torch.ones(1, 1, SIZE, SIZE))
    with pytest.raises(RegionEditError, match="larger than possible"):
        tiny = torch.zeros(1, 1, SIZE, SIZE)
        tiny[..., 0, 0] = 1
        rbe.discover(pixel_model, start, tiny, k=4)


# ---------------------------------------------------------------------------- CLI
@pytest.fixture
def face_files(tmp_path):
    from regionedit.images import save_png, tensor_to_pil
    from regionedit.toyworld.faces import generate_faces

    faces = generate_faces([1, 2], size=32)
    paths = []
    for i in range(2):
        paths.append(save_png(tensor_to_pil(faces.images[i] * 2 - 1), tmp_path / f"face{i}.png"))
    return paths


FAST = ["--model", "tiny/pixel-ddpm", "--max-iterations", "5", "-q"]


def test_cli_discover_and_transfer_with_a_strip(face_files, tmp_path, capsys):
    dirs = tmp_path / "eyes.safetensors"
    assert main(["discover", "rbe", str(face_files[0]), "--mask", "face:eyes", "-o", str(dirs), *FAST]) == 0
    assert "leakage" in capsys.readouterr().out
    strip = tmp_path / "strip.png"
    assert main(["edit", "rbe", str(face_files[1]), "--directions", str(dirs), "--strip", "--strengths=-20,0,20",
                 "-o", str(strip), "--model", "tiny/pixel-ddpm", "-q"]) == 0
    from PIL import Image

    assert Image.open(strip).size == (96, 32)
    recipe = read_recipe(strip)
    assert recipe["method"] == "rbe" and recipe["strengths"] == [-20.0, 0.0, 20.0] and recipe["timestep"] == 500
    jdirs = tmp_path / "j.safetensors"
    assert main(["discover", "jica", str(face_files[0]), "--mask", "face:eyes", "--mask", "8,20,24,28",
                 "--svd-rank", "4", "--joint-rank", "1", "--individual-rank", "2", "-o", str(jdirs), *FAST]) == 0
    code = main(["edit", "rbe", str(face_files[1]), "--directions", str(jdirs), "-o", str(tmp_path / "x.png"),
                 "--model", "tiny/pixel-ddpm"])
    assert code == 2 and "use `regionedit edit jica`" in capsys.readouterr().err
    code = main(["edit", "rbe", str(face_files[1]), "--directions", str(dirs), "-o", str(tmp_path / "y.png"),
                 "--model", "tiny/sd", "--prompt", "a face"])
    assert code == 2 and "found with model 'tiny/pixel-ddpm'" in capsys.readouterr().err


def test_cli_mask_errors(face_files, tmp_path, capsys):
    out = str(tmp_path / "d.safetensors")
    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("L", (8, 8), 255).save(small)
    assert main(["discover", "rbe", str(face_files[0]), "--mask", str(small), "-o", out, *FAST]) == 2
    err = capsys.readouterr().err
    assert "resized to the image's 32×32" in err and "whole image" in err
    assert main(["discover", "rbe", str(face_files[0]), "--mask", "3,3,3,9", "-o", out, *FAST]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["discover", "rbe", str(face_files[0]), "--mask", "face:nose", "-o", out, *FAST]) == 2
    assert "unknown face part" in capsys.readouterr().err
    assert main(["discover", "rbe", str(face_files[0]), "--mask", "face:eyes", "--mask", "face:mouth", "-o", out, *FAST]) == 2
    assert "one --mask" in capsys.readouterr().err
    assert main(["discover", "rbe", str(face_files[0]), "--mask", "face:eyes", "--k", "100000", "-o", out, *FAST]) == 2
    assert "larger than possible" in capsys.readouterr().err


def test_bench_discover_tiny_json(tmp_path):
    out = tmp_path / "d.json"
    assert main(["bench", "discover", "--tiny", "--device", "cpu", "--max-iterations", "5", "--json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    for key in ("discover_s", "k", "iters", "device", "model"):
        assert key in result
    assert result["model"] == "tiny/pixel-ddpm" and result["k"] == 3


def test_bench_directions_plumbing_on_the_tiny_model():
    from regionedit.bench.discover import bench_directions

    result = bench_directions("tiny/pixel-ddpm", torch.device("cpu"), count=2, max_iterations=2, size=32)
    assert 0.0 <= result["mean_energy_inside"] <= 1.0 and 0.0 <= result["transfer_success"] <= 1.0
    assert sum(result["factors_moved"].values()) == 6  # 3 directions on each of 2 faces
    assert result["share_top_direction_moves_exactly_one_factor"] in (0.0, 0.5, 1.0)
    assert result["share_exactly_one_factor_counting_hidden_factors"] in (0.0, 0.5, 1.0)
    assert 0.0 <= result["transfer_to_previous_face_mean_energy_inside"] <= 1.0
    assert result["transfer_to_previous_face_mean_energy_inside"] != result["transfer_mean_energy_inside"]  # other sources
    assert result["split"] == "benchmark"
    validation = bench_directions("tiny/pixel-ddpm", torch.device("cpu"), count=2, max_iterations=2, size=32, split="validation")
    assert validation["split"] == "validation" and validation["mean_energy_inside"] != result["mean_energy_inside"]  # other faces
    joint = bench_directions("tiny/pixel-ddpm", torch.device("cpu"), method="jica", count=1, max_iterations=1, size=32)
    ratios = joint["individual_own_over_other_region"]
    assert set(ratios) == {"eyes", "mouth"} and all(r["median"] > 0 and 0 <= r["share_at_least_5x"] <= 1 for r in ratios.values())


def test_bench_directions_sweeps_the_complement_rank_and_the_timestep():
    from regionedit.bench.discover import bench_directions

    settings = dict(count=1, max_iterations=2, size=32, split="validation")
    default = bench_directions("tiny/pixel-ddpm", torch.device("cpu"), **settings)
    assert (default["complement_rank"], default["timestep"]) == (16, 500)
    for change in ({"complement_rank": 1}, {"timestep": 300}):
        swept = bench_directions("tiny/pixel-ddpm", torch.device("cpu"), **settings, **change)
        assert {key: swept[key] for key in change} == change
        assert swept["mean_energy_inside"] != default["mean_energy_inside"]  # the setting reached the method


def test_bench_directions_resumes_after_an_interruption(tmp_path, monkeypatch):
    from regionedit.bench import discover

    settings = dict(count=3, max_iterations=1, size=32)
    whole = discover.bench_directions("tiny/pixel-ddpm", torch.device("cpu"), **settings)
    progress = tmp_path / "rbe.json.partial.jsonl"
    append = discover._append_progress

    def interrupted(path, settings, record):
        append(path, settings, record)
        if record["face"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(discover, "_append_progress", interrupted)
    with pytest.raises(KeyboardInterrupt):
        discover.bench_directions("tiny/pixel-ddpm", torch.device("cpu"), progress_file=progress, **settings)
    monkeypatch.setattr(discover, "_append_progress", append)
    with progress.open("a") as file:
        file.write('{"face": 3, "locali')  # a line torn by the interruption
    with pytest.raises(RegionEditError, match="other settings"):
        discover.bench_directions("tiny/pixel-ddpm", torch.device("cpu"), progress_file=progress, count=3,
                                  max_iterations=2, size=32)
    resumed = discover.bench_directions("tiny/pixel-ddpm", torch.device("cpu"), progress_file=progress, **settings)
    assert resumed["resumed_after_faces"] == 2 and not progress.exists()
    figures = [k for k in whole if k not in ("seconds", "machine", "resumed_after_faces")]
    assert {k: resumed[k] for k in figures} == {k: whole[k] for k in figures}


def test_bench_directions_refuses_progress_written_before_the_complement_rank_was_named(tmp_path):
    """Files from before r was recorded ran at r = 8: a run at today's r = 16 must not continue them."""
    from regionedit.bench import discover

    settings = {"model": "tiny/pixel-ddpm", "method": "rbe", "count": 2, "strength": 30.0, "dilation": 3,
                "max_iterations": 1, "size": 32, "factor_reading": discover.FACTOR_READING}
    progress = tmp_path / "rbe.json.partial.jsonl"
    record = {"face": 1, "moved": [], "locality": 0.5, "single": False, "transfer": 0.5, "seconds": 1.0}
    progress.write_text(json.dumps({"settings": settings}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(RegionEditError, match="other settings"):
        discover.bench_directions("tiny/pixel-ddpm", torch.device("cpu"), progress_file=progress, count=2,
                                  max_iterations=1, size=32, complement_rank=16)
    assert progress.read_text().count("\n") == 2  # refused, and nothing lost
    resumed = discover.bench_directions("tiny/pixel-ddpm", torch.device("cpu"), progress_file=progress, count=2,
                                        max_iterations=1, size=32, complement_rank=8)
    assert resumed["resumed_after_faces"] == 1 and resumed["complement_rank"] == 8


def test_bench_directions_refuses_progress_that_counted_hidden_factors_as_moved(tmp_path):
    from regionedit.bench import discover

    settings = {"model": "tiny/pixel-ddpm", "method": "rbe", "count": 2, "strength": 30.0, "dilation": 3,
                "max_iterations": 1, "size": 32, "complement_rank": 8}
    progress = tmp_path / "rbe.json.partial.jsonl"
    record = {"face": 1, "moved": [], "locality": 0.5, "single": False, "transfer": 0.5, "seconds": 1.0}
    progress.write_text(json.dumps({"settings": settings}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(RegionEditError, match="hidden factors too"):
        discover.bench_directions("tiny/pixel-ddpm", torch.device("cpu"), progress_file=progress, count=2,
                                  max_iterations=1, size=32, complement_rank=8)
    assert progress.read_text().count("\n") == 2


def test_a_factor_hidden_by_the_edit_has_not_moved():
    """Closing the eyes hides the iris: only eye openness moved, whatever the probe reads of the iris."""
    from regionedit.bench.discover import _factor_moves
    from regionedit.toyworld import faces, probes

    net = probes.load_probe("faces")
    factors = faces.sample_factors([3])
    factors["eye_openness"][:] = 0.9
    edits = {"closed": {"eye_openness": 0.05}, "green iris": {"iris_colour": 2 if int(factors["iris_colour"]) != 2 else 1}}
    reference = faces.render(factors).images
    for edit, change in edits.items():
        edited = faces.render({**factors, **{k: torch.full_like(factors[k], v) for k, v in change.items()}}).images
        moves = _factor_moves(net, reference, edited)
        moved = {name for name, move in moves.items() if move >= 0.1}
        assert moved == ({"eye_openness"} if edit == "closed" else {"iris_colour"}), (edit, moves)
