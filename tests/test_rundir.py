"""The run folder's guarantees: stale inputs recompute, one writer at a time, stages rerun alone, in-memory inputs."""

import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import changescope
from changescope.config import DiscoverConfig, RunConfig, ScoreConfig
from changescope.errors import ParameterError
from changescope.evaluate import evaluate_run
from changescope.report import build_report
from changescope.run import rediscover, rescore, run_pipeline
from changescope.rundir import LOCK, RunDir, RunLockedError
from changescope.synthetic import make_aoi

CFG = RunConfig(patch_size=32, subdivide=1, seed=3)


@pytest.fixture(scope="module")
def aoi(tmp_path_factory):
    root = tmp_path_factory.mktemp("aoi")
    make_aoi(root, seed=11, size=128, months=7)
    return root


def _tifs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tif") if "label" not in str(p).lower() and "mask" not in p.name.lower())


def test_changed_input_never_reuses_stale_results(aoi, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(aoi, src)
    out = tmp_path / "run"
    run_pipeline(src, out, CFG, progress=False)
    before = pd.read_parquet(out / "patch_scores.parquet")
    emb_before = np.asarray(changescope.open(src)["image"].isel(time=-1).values)
    # replace the last date's image by another date's image, under the same name
    images = _tifs(src)
    shutil.copyfile(images[1], images[-1])
    assert not np.array_equal(np.asarray(changescope.open(src)["image"].isel(time=-1).values), emb_before)
    fp_before = RunDir(out).manifest()["input"]["fingerprint"]
    run_pipeline(src, out, CFG, progress=False)
    assert RunDir(out).manifest()["input"]["fingerprint"] != fp_before
    after = pd.read_parquet(out / "patch_scores.parquet")
    last_t = after.time.max()
    assert not np.allclose(
        before[before.time == last_t].raw_score.to_numpy(),
        after[after.time == last_t].raw_score.to_numpy(),
        equal_nan=True,
    )
    # and the same input again reuses the store (no recompute)
    mtime = (out / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns
    run_pipeline(src, out, CFG, progress=False)
    assert (out / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns == mtime


def test_other_parameters_remove_what_they_invalidate(aoi, tmp_path):
    out = tmp_path / "run"
    run_pipeline(aoi, out, CFG, progress=False)
    evaluate_run(out)
    assert (out / "metrics.json").exists() and (out / "figures" / "roc.png").exists()
    run_pipeline(aoi, out, CFG.replace(false_alarms=20.0), progress=False)
    assert not (out / "metrics.json").exists() and not (out / "figures").exists()
    assert json.loads((out / "run.json").read_text())["config"]["false_alarms"] == 20.0


def test_a_second_writer_is_refused_and_a_dead_lock_taken_over(aoi, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "command": "run"}))
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            run_pipeline(aoi, out, CFG, progress=False)
        assert not (out / "embeddings.zarr").exists()  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    run_pipeline(aoi, out, CFG, progress=False)  # its process is gone: the lock is stale
    assert (out / "run.json").exists() and not (out / LOCK).exists()


def test_out_inside_the_input_or_a_file_is_refused(aoi, tmp_path):
    with pytest.raises(ParameterError, match="inside the input"):
        run_pipeline(aoi, aoi / "out", CFG, progress=False)
    with pytest.raises(ParameterError, match="inside the input"):
        run_pipeline(aoi, aoi, CFG, progress=False)
    assert not (aoi / "out").exists()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ParameterError, match="existing file"):
        run_pipeline(aoi, f, CFG, progress=False)
    assert f.read_text() == "x"


def test_in_memory_series_runs_end_to_end(aoi, tmp_path):
    ds = changescope.open(aoi).load()
    ds.attrs.pop("source", None)
    out = tmp_path / "run"
    res = run_pipeline(ds, out, CFG, progress=False)
    assert (out / "input.zarr").is_dir() and res.out == out
    again = RunDir(out).open_input()
    assert again is not None
    np.testing.assert_array_equal(again["image"].values, ds["image"].values)
    assert "data:image/png;base64," in build_report(out).read_text()


def _same_files(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        pa, pb = a / name, b / name
        assert pa.exists() and pb.exists(), name
        if pa.is_dir():
            for fa in sorted(pa.rglob("*")):
                if fa.is_file():
                    assert filecmp.cmp(fa, pb / fa.relative_to(pa), shallow=False), fa
        else:
            assert filecmp.cmp(pa, pb, shallow=False), name


def test_score_and_discover_reproduce_run(aoi, tmp_path):
    cfg = RunConfig(patch_size=32, seed=3, false_alarms=30.0)
    out = tmp_path / "run"
    run_pipeline(aoi, out, cfg, progress=False)
    files = ["patch_scores.parquet", "events.parquet", "event_states.npy", "changes.parquet", "change_vectors.npy"]
    files += ["clusters.json", "maps"]
    ref = tmp_path / "ref"
    shutil.copytree(out, ref)
    emb_mtime = (out / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns
    rescore(out, cfg.score)
    _same_files(ref, out, files)
    rediscover(out, cfg.discover)
    _same_files(ref, out, files)
    assert (out / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns == emb_mtime  # never re-embedded
    # other options change what they own, and only that
    rediscover(out, DiscoverConfig(cluster="kmeans", n_clusters=2, seed=3))
    _same_files(ref, out, ["patch_scores.parquet", "events.parquet"])
    assert (
        json.loads((out / "clusters.json").read_text())["params"]
        != json.loads((ref / "clusters.json").read_text())["params"]
    )
    strict = rescore(out, ScoreConfig(false_alarms=0.5))
    loose = json.loads((ref / "run.json").read_text())
    assert strict.n_confirmed <= loose["n_confirmed"]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["false_alarms"] == 0.5 and run["config"]["cluster"] == "kmeans"  # discover options kept
    assert run["stages"]["score"]["config"]["false_alarms"] == 0.5


def test_score_needs_a_run(tmp_path):
    with pytest.raises(ParameterError, match="does not exist"):
        rescore(tmp_path / "nope", ScoreConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="no finished embed stage"):
        rescore(tmp_path / "empty", ScoreConfig())
    with pytest.raises(ParameterError, match="no finished"):
        rediscover(tmp_path / "empty", DiscoverConfig())


@pytest.mark.slow
def test_ctrl_c_exits_130_and_the_rerun_resumes(tmp_path):
    aoi = tmp_path / "aoi"
    make_aoi(aoi, seed=2, size=384, months=10)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-c",
        "from changescope.cli.app import main; main()",
        "run",
        str(aoi),
        "--out",
        str(out),
        "--patch-size",
        "8",
    ]
    cmd += ["--encoder", "resnet18", "--weights", "random", "--no-report", "--quiet"]
    # SIGINT as a terminal delivers it, whatever disposition this test process inherited (a shell's background job
    # starts with SIGINT ignored, and a child would inherit that)
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "embeddings.zarr" / ".zattrs").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err and "Traceback" not in err
    assert not list(out.rglob("*.tmp-*")) and not (out / LOCK).exists() and not (out / "run.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / "run.json").exists()
