"""Bad input to every verb: exit code, one line naming the file or parameter, and nothing changed on disk.

Each case builds its bad input from a seeded tiny AOI and a finished tiny run (copied per case), runs the real
command line (``changescope.cli.app.main``) and checks:

- the exit code (1 for a changescope error, 2 for a command-line usage error);
- stderr is exactly one line, starts with ``error:``, holds no traceback, and names what is wrong;
- no file of the input, and no earlier output, was created, changed or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from changescope.cli.app import main
from changescope.synthetic import make_aoi


def snapshot(*roots: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``roots``: size and content hash."""
    out = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = (root.stat().st_size, hashlib.sha256(root.read_bytes()).hexdigest())
            continue
        for p in sorted(root.rglob("*")) if root.exists() else []:
            if p.is_file() and not p.is_symlink():
                out[str(p)] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@dataclass
class World:
    aoi: Path
    run: Path
    tmp: Path

    def copy_run(self, name: str = "run2") -> Path:
        target = self.tmp / name
        shutil.copytree(self.run, target, symlinks=True)
        return target


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    make_aoi(root / "aoi", seed=8, size=128, months=6)
    main_ok(
        [
            "run",
            str(root / "aoi"),
            "--out",
            str(root / "run"),
            "--subdivide",
            "1",
            "--quiet",
            "--no-report",
            "--threshold",
            "otsu",
        ]
    )
    return World(root / "aoi", root / "run", root)


def main_ok(args: list[str]) -> None:
    try:
        main(args)
    except SystemExit as ex:
        assert ex.code in (0, None), f"{args} exited {ex.code}"


@dataclass
class Case:
    """A bad command: ``make(world, tmp)`` returns its arguments, what the message must name, and the paths
    that must not change."""

    make: Callable[[World, Path], tuple[list[str], list[str], list[Path]]]
    code: int = 1


def _live_lock(run: Path) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (run / ".changescope.lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename}))
    return holder


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _run_with_damage(damage: Callable[[Path], str], verb: list[str]) -> Callable[[World, Path], tuple]:
    def make(w: World, tmp: Path) -> tuple[list[str], list[str], list[Path]]:
        run = w.copy_run(f"r_{tmp.name}")
        named = damage(run)
        return [verb[0], str(run), *verb[1:]], [named], [run, w.aoi]

    return make


def _rm(name: str) -> Callable[[Path], str]:
    def damage(run: Path) -> str:
        p = run / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
        return name

    return damage


def _cut(name: str) -> Callable[[Path], str]:
    def damage(run: Path) -> str:
        _truncate(run / name)
        return name

    return damage


def _garble(name: str) -> Callable[[Path], str]:
    def damage(run: Path) -> str:
        (run / name).write_text("{not json")
        return name

    return damage


def _run_args(w: World, out: Path, *extra: str) -> list[str]:
    return ["run", str(w.aoi), "--out", str(out), "--subdivide", "1", "--quiet", "--no-report", *extra]


def _opt(flag: str, value: str, named: str | None = None, code: int = 1) -> Case:
    return Case(lambda w, t: (_run_args(w, t / "out", flag, value), [named or flag], [w.aoi]), code)


CASES: dict[str, Case] = {
    # run: options
    "run_method_typo": _opt("--method", "distanse", "--method", code=2),
    "run_reference_typo": _opt("--reference", "frist", "--reference", code=2),
    "run_cluster_typo": _opt("--cluster", "dbscan", "--cluster", code=2),
    "run_threshold_typo": _opt("--threshold", "otsuu", "--threshold"),
    "run_false_alarms_negative": _opt("--false-alarms", "-1", "--false-alarms"),
    "run_fdr_above_one": _opt("--fdr", "1.5", "--fdr"),
    "run_patch_size_zero": _opt("--patch-size", "0", "--patch-size"),
    "run_patch_size_too_big": _opt("--patch-size", "4096", "--patch-size"),
    "run_min_valid_above_one": _opt("--min-valid", "1.5", "--min-valid"),
    "run_rank_weight": _opt("--rank-weight", "3", "--rank-weight"),
    "run_n_clusters_zero": _opt("--n-clusters", "0", "--n-clusters"),
    "run_k_zero": _opt("--k", "0", "--k"),
    "run_unknown_encoder": _opt("--encoder", "resnet9000", "resnet9000"),
    "run_missing_weights": _opt("--weights", "/nonexistent/w.safetensors", "/nonexistent/w.safetensors"),
    "run_unknown_format": _opt("--format", "jpeg2000", "jpeg2000"),
    "run_unknown_aoi": _opt("--aoi", "aoi_9999", "aoi_9999"),
    "run_embeddings_not_a_store": Case(
        lambda w, t: (_run_args(w, t / "out", "--embeddings", str(w.aoi)), ["embeddings"], [w.aoi])
    ),
    "run_scheduler_unreachable": _opt("--scheduler", "tcp://127.0.0.1:9", "--scheduler"),
    "run_device_typo": _opt("--device", "tpu", "--device", code=2),
    # run: paths
    "run_input_missing": Case(lambda w, t: (["run", str(t / "nope"), "--out", str(t / "o"), "--quiet"], ["nope"], [])),
    "run_out_is_a_file": Case(
        lambda w, t: ((t / "f.txt").write_text("keep") and _run_args(w, t / "f.txt"), ["f.txt"], [t / "f.txt", w.aoi])
    ),
    "run_out_under_a_file": Case(
        lambda w, t: ((t / "f.txt").write_text("keep") and _run_args(w, t / "f.txt" / "sub"), ["f.txt"], [t / "f.txt"])
    ),
    "run_out_inside_input": Case(lambda w, t: (_run_args(w, w.aoi / "out"), ["inside the input"], [w.aoi])),
    "run_out_is_input": Case(lambda w, t: (_run_args(w, w.aoi), ["inside the input"], [w.aoi])),
    "run_out_locked": Case(lambda w, t: (_run_args(w, w.copy_run(f"l_{t.name}")), ["in use", "pid"], [w.aoi])),
    "run_no_command_input": Case(lambda w, t: (["run"], ["input"], []), code=2),
    # score
    "score_no_folder": Case(lambda w, t: (["score", str(t / "nope")], ["does not exist"], [])),
    "score_empty_folder": Case(
        lambda w, t: ((t / "e").mkdir() or ["score", str(t / "e")], ["no finished embed"], [t / "e"])
    ),
    "score_false_alarms_zero": Case(
        lambda w, t: (["score", str(w.copy_run(f"s_{t.name}")), "--false-alarms", "0"], ["--false-alarms"], [w.run])
    ),
    "score_method_typo": Case(lambda w, t: (["score", str(w.run), "--method", "x"], ["--method"], [w.run]), code=2),
    "score_locked": Case(lambda w, t: (["score", str(w.copy_run(f"sl_{t.name}"))], ["in use"], [])),
    "score_corrupt_manifest": Case(_run_with_damage(_garble("manifest.json"), ["score"])),
    # discover
    "discover_no_folder": Case(lambda w, t: (["discover", str(t / "nope")], ["does not exist"], [])),
    "discover_rank_by_typo": Case(
        lambda w, t: (["discover", str(w.run), "--rank-by", "x"], ["--rank-by"], [w.run]), code=2
    ),
    "discover_rank_weight": Case(
        lambda w, t: (["discover", str(w.copy_run(f"d_{t.name}")), "--rank-weight", "-1"], ["--rank-weight"], [w.run])
    ),
    "discover_events_missing": Case(_run_with_damage(_rm("events.parquet"), ["discover"])),
    "discover_events_truncated": Case(_run_with_damage(_cut("events.parquet"), ["discover"])),
    # report
    "report_no_run_json": Case(_run_with_damage(_rm("run.json"), ["report"])),
    "report_corrupt_run_json": Case(_run_with_damage(_garble("run.json"), ["report"])),
    "report_no_changes": Case(_run_with_damage(_rm("changes.parquet"), ["report"])),
    "report_truncated_changes": Case(_run_with_damage(_cut("changes.parquet"), ["report"])),
    "report_no_patch_scores": Case(_run_with_damage(_rm("patch_scores.parquet"), ["report"])),
    "report_truncated_patch_scores": Case(_run_with_damage(_cut("patch_scores.parquet"), ["report"])),
    "report_max_px_zero": Case(
        lambda w, t: (["report", str(w.copy_run(f"m_{t.name}")), "--max-px", "0"], ["--max-px"], [w.run])
    ),
    "report_no_folder": Case(lambda w, t: (["report", str(t / "nope")], ["nope"], [])),
    # explore
    "explore_no_run_json": Case(_run_with_damage(_rm("run.json"), ["explore"])),
    "explore_no_changes": Case(_run_with_damage(_rm("changes.parquet"), ["explore"])),
    "explore_bad_method": Case(
        lambda w, t: (["explore", str(w.copy_run(f"x_{t.name}")), "--method", "mds"], ["mds"], [w.run])
    ),
    # evaluate
    "evaluate_no_run_json": Case(_run_with_damage(_rm("run.json"), ["evaluate"])),
    "evaluate_corrupt_run_json": Case(_run_with_damage(_garble("run.json"), ["evaluate"])),
    "evaluate_truncated_patch_scores": Case(_run_with_damage(_cut("patch_scores.parquet"), ["evaluate"])),
    "evaluate_truth_missing": Case(
        lambda w, t: (["evaluate", str(w.copy_run(f"e_{t.name}")), "--truth", str(t / "t.tif")], ["t.tif"], [w.run])
    ),
    # search
    "search_unknown_event": Case(
        lambda w, t: (["search", str(w.run), "--like", "aoi_0000:1999-01-01:r0c0"], ["1999"], [w.run])
    ),
    "search_no_catalog": Case(lambda w, t: (["search", str(t / "nope"), "--like", "x"], ["nope"], [])),
    "search_json_under_a_file": Case(
        lambda w, t: (
            (t / "f.txt").write_text("keep")
            and ["search", str(w.copy_run(f"j_{t.name}")), "--like", "x", "--json", str(t / "f.txt" / "o.json")],
            ["x"],
            [t / "f.txt"],
        )
    ),
    # embed
    "embed_unknown_encoder": Case(
        lambda w, t: (
            ["embed", str(w.aoi), "--encoder", "nope", "--patch-size", "32", "--out", str(t / "e.zarr")],
            ["nope"],
            [w.aoi],
        )
    ),
    "embed_out_is_a_file": Case(
        lambda w, t: (
            (t / "f.txt").write_text("keep")
            and ["embed", str(w.aoi), "--encoder", "spectral", "--patch-size", "32", "--out", str(t / "f.txt")],
            ["f.txt"],
            [t / "f.txt", w.aoi],
        )
    ),
    # inspect
    "inspect_missing_input": Case(lambda w, t: (["inspect", str(t / "nope")], ["nope"], [])),
    "inspect_json_under_a_file": Case(
        lambda w, t: (
            (t / "f.txt").write_text("keep") and ["inspect", str(w.aoi), "--json", str(t / "f.txt" / "q.json")],
            ["f.txt"],
            [t / "f.txt", w.aoi],
        )
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    holder = None
    args, named, keep = case.make(world, tmp_path)
    if name.endswith("_locked"):
        holder = _live_lock(Path(args[args.index("--out") + 1]) if "--out" in args else Path(args[1]))
        keep = [*keep, Path(args[args.index("--out") + 1]) if "--out" in args else Path(args[1])]
    before = snapshot(world.aoi, world.run, *keep)
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == case.code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error:"), err
    for word in named:
        assert word in err, (word, err)
    after = snapshot(world.aoi, world.run, *keep)
    assert after == before, "the command changed files it must not touch"
    assert not list(world.aoi.rglob("*.tmp-*"))


def test_the_corpus_is_large() -> None:
    assert len(CASES) >= 50
