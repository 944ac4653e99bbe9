"""`regionedit batch`: manifests, atomic resumable outputs, accelerate (2 processes), kill/resume, Ray."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from regionedit.batch import make_groups, read_manifest, run_local
from regionedit.images import save_png, tensor_to_pil
from regionedit.toyworld.scenes import generate_edits

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    edits = generate_edits(list(range(40, 50)))
    lines = []
    for i in range(10):
        save_png(tensor_to_pil(edits.source.images[i] * 2 - 1), folder / f"img{i}.png")
        lines.append({"id": f"z{i}", "method": "zone", "image": f"img{i}.png", "instruction": edits.instruction[i],
                      "model": "tiny/ip2p", "seed": i, "params": {"num_inference_steps": 4}})
    lines.append({"id": "r0", "method": "rdm", "image": "img0.png", "target": "a blue ball", "box": [10, 10, 30, 30],
                  "model": "tiny/sd", "params": {"num_inference_steps": 3, "clip_guidance_scale": 0}})
    lines.append({"id": "d0", "method": "ddpm", "image": "img1.png", "source_prompt": "a scene",
                  "target_prompt": "a red scene", "model": "tiny/sd", "params": {"steps": 8, "skip": 2}})
    text = "\n".join(json.dumps(line) for line in lines)
    text += "\n{oops\n" + json.dumps({"id": "x", "method": "paint", "image": "img0.png"})
    text += "\n" + json.dumps({"id": "z0", "method": "zone", "image": "img0.png", "instruction": "again"})
    text += "\n" + json.dumps({"id": "y", "method": "zone", "image": "missing.png", "instruction": "a"}) + "\n"
    path = folder / "manifest.jsonl"
    path.write_text(text)
    return path


def command(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "regionedit.cli", "batch", str(manifest), "--out", str(out), "--batch-size", "3", "-q", *extra]


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "outputs").glob("*.png"))}


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    result = subprocess.run(command(manifest, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return out, result


def test_malformed_lines_are_reported_with_numbers_and_skipped(manifest, reference):
    jobs, problems = read_manifest(manifest)
    assert len(jobs) == 12
    assert [p.split(":")[0] for p in problems] == ["line 13", "line 14", "line 15", "line 16"]
    assert "not valid JSON" in problems[0] and "unknown method" in problems[1]
    assert "duplicate id 'z0'" in problems[2] and "image not found" in problems[3]
    out, result = reference
    assert "line 13: not valid JSON" in result.stderr and "12/12 done" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 12 and summary["failed"] == {} and len(summary["malformed_lines"]) == 4


def test_groups_are_fixed_by_the_manifest(manifest):
    jobs, _ = read_manifest(manifest)
    groups = make_groups(jobs, 3)
    assert [[j.id for j in g] for g in groups] == [["z0", "z1", "z2"], ["z3", "z4", "z5"], ["z6", "z7", "z8"], ["z9"],
                                                   ["r0"], ["d0"]]


def test_a_rerun_redoes_nothing(manifest, reference, tmp_path):
    out, _ = reference
    before = {p.name: p.read_text() for p in (out / "done").glob("*.json")}
    summary = run_local(manifest, out, progress=False, log=lambda m: None)
    assert summary["done"] == 12 and {p.name: p.read_text() for p in (out / "done").glob("*.json")} == before


def test_two_accelerate_processes_do_each_item_exactly_once(manifest, reference, tmp_path):
    out = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "regionedit.cli", "batch", str(manifest),
              "--out", str(out), "--batch-size", "3", "-q"]
    result = subprocess.run(launch, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for log in (out / "logs").glob("*.jsonl") for line in log.read_text().splitlines()]
    done = [e["id"] for e in entries if e["status"] == "done"]
    assert sorted(done) == sorted(set(done)) and len(done) == 12
    workers = {json.loads(p.read_text())["worker"] for p in (out / "done").glob("*.json")}
    assert workers == {0, 1}
    assert outputs(out) == outputs(reference[0])  # same groups, same threads: the same bytes


# Deterministic faults: (variable, N) kills the process without clean-up at a fixed point of each run.
FAULTS = [("REGIONEDIT_FAULT_IN_WRITE", 1), ("REGIONEDIT_FAULT_AFTER_COMMITS", 2), ("REGIONEDIT_FAULT_IN_WRITE", 2),
          ("REGIONEDIT_FAULT_AFTER_COMMITS", 3), ("REGIONEDIT_FAULT_AFTER_COMMITS", 1)]


def test_killed_five_times_and_resumed(manifest, reference, tmp_path):
    out = tmp_path / "killed"
    committed: dict[str, str] = {}
    for variable, count in FAULTS:
        result = subprocess.run(command(manifest, out), env={**ENV, variable: str(count)}, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        markers = {p.stem: p.read_text() for p in (out / "done").glob("*.json")} if (out / "done").exists() else {}
        for job_id, text in committed.items():
            assert markers[job_id] == text  # a finished item is never computed again
        assert len(markers) > len(committed) or variable == "REGIONEDIT_FAULT_IN_WRITE"
        assert not list((out / "outputs").glob(".*"))  # no half-written file left under a real name or a temp one
        for png in (out / "outputs").glob("*.png"):
            assert png.read_bytes() == (reference[0] / "outputs" / png.name).read_bytes()  # complete, or absent
        committed = markers
    result = subprocess.run(command(manifest, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "12/12 done" in result.stdout
    for job_id, text in committed.items():
        assert (out / "done" / f"{job_id}.json").read_text() == text
    assert outputs(out) == outputs(reference[0])


def test_a_bad_item_fails_alone_with_its_own_reason(tmp_path):
    edits = generate_edits(list(range(60, 63)))
    lines = [{"id": "bad", "method": "zone", "image": "broken.png", "instruction": "make the ball red", "model": "tiny/ip2p",
              "params": {"num_inference_steps": 2}}]
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    for i in range(3):
        save_png(tensor_to_pil(edits.source.images[i] * 2 - 1), tmp_path / f"ok{i}.png")
        lines.append({**lines[0], "id": f"ok{i}", "image": f"ok{i}.png", "instruction": edits.instruction[i]})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines))
    assert [[j.id for j in g] for g in make_groups(read_manifest(manifest)[0], 4)] == [["bad", "ok0", "ok1", "ok2"]]
    summary = run_local(manifest, tmp_path / "out", device="cpu", batch_size=4, progress=False, log=lambda *_: None)
    assert summary["done"] == 3 and list(summary["failed"]) == ["bad"]
    assert "broken.png" in summary["failed"]["bad"]
    assert all((tmp_path / "out" / "done" / f"ok{i}.json").exists() for i in range(3))


def test_each_item_keeps_its_own_parameters(tmp_path):
    from regionedit.images import read_recipe

    edits = generate_edits(list(range(70, 74)))
    lines = []
    for i in range(4):
        save_png(tensor_to_pil(edits.source.images[i] * 2 - 1), tmp_path / f"i{i}.png")
        lines.append({"id": f"s{i}", "method": "zone", "image": f"i{i}.png", "instruction": edits.instruction[i],
                      "model": "tiny/ip2p", "params": {"num_inference_steps": 2 + i % 2}})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines))
    groups = make_groups(read_manifest(manifest)[0], 8)
    assert [[j.id for j in g] for g in groups] == [["s0", "s2"], ["s1", "s3"]]
    summary = run_local(manifest, tmp_path / "out", device="cpu", progress=False, log=lambda *_: None)
    assert summary["done"] == 4
    for i in range(4):
        assert read_recipe(tmp_path / "out" / "outputs" / f"s{i}.png")["num_inference_steps"] == 2 + i % 2


@pytest.mark.parametrize("params, message", [
    ({"num_inference_steps": -5}, "params.num_inference_steps must be in [1, 1000]"),
    ({"evil": 1}, "unknown params.evil for method zone"),
    ({"guidance_scale": "high"}, "params.guidance_scale must be float"),
    ({"num_inference_steps": 2.5}, "params.num_inference_steps must be int"),
    ({"eta": 1e309}, "params.eta must be a finite number"),
])
def test_bad_params_are_reported_with_their_line(tmp_path, params, message):
    save_png(tensor_to_pil(generate_edits([1]).source.images[0] * 2 - 1), tmp_path / "a.png")
    good = {"id": "a", "method": "zone", "image": "a.png", "instruction": "make the ball red"}
    (tmp_path / "m.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "params": params}) + "\n")
    jobs, problems = read_manifest(tmp_path / "m.jsonl")
    assert [j.id for j in jobs] == ["a"] and len(problems) == 1
    assert problems[0].startswith("line 2: ") and message in problems[0], problems


@pytest.mark.timeout(960)  # past the run's own 900 s limit, which says what it was doing (cores shared: slow)
def test_ray_engine(manifest, reference, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    result = subprocess.run(command(manifest, out, "--engine", "ray", "--workers", "2"), env=ENV, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "12/12 done" in result.stdout
    assert len(list((out / "logs").glob("worker-*.jsonl"))) == 2  # models loaded once per actor, two actors
    assert outputs(out) == outputs(reference[0])


def test_toy_faces_rbe_manifest_runs_and_the_steady_rate_skips_the_first_group(tmp_path):
    from regionedit.bench.batch import steady_rate, write_rbe_manifest

    path, discovery = write_rbe_manifest(tmp_path, 2, "toy/faces-ddpm", iterations=1)
    jobs, problems = read_manifest(path)
    assert not problems and [job.method for job in jobs] == ["rbe", "rbe"] and discovery["timestep"] == 500
    summary = run_local(path, tmp_path / "out", device="cpu", progress=False, log=lambda *_: None)
    assert summary["done"] == 2 and not summary["failed"]
    logs = tmp_path / "rates" / "logs"
    logs.mkdir(parents=True)
    # a group of 4 items committed at t = 0, then one item per second until t = 4
    (logs / "worker-0.jsonl").write_text("".join(json.dumps({"time": t}) + "\n" for t in [0, 0.01, 0.02, 0.03, 1, 2, 3, 4]))
    span, rate = steady_rate(tmp_path / "rates")
    assert span == 4 and rate == 1.0
