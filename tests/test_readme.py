"""Every ``changescope`` command of the README's command blocks runs, on tiny inputs, and exits 0.

The commands are read from the README itself (backslash continuations joined, comments dropped), so a README
example that stops working fails here. Tiny inputs replace the big ones: the synthetic AOI is 128 px and 8 months,
and ``search --like`` takes an event the tiny run really found. The commands that need files only a user has
(a training config whose inputs the user sets, a cities table and land mask) are listed in :data:`NEEDS_USER_FILES`
and checked to exist in the README rather than run; ``make`` lines are the set-up itself.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from changescope.cli.app import main

README = Path(__file__).resolve().parents[1] / "README.md"
NEEDS_USER_FILES = {
    ("train", "ssl"): "needs cfg.yaml with data.inputs set by the user (tests/train runs train_ssl)",
    ("train", "sample-locations"): "needs the user's cities.csv and land.tif (tests/train covers it)",
    ("run", "checkpoint"): "needs the encoder that `train ssl` writes (tests/train loads such checkpoints)",
    ("serve", ""): "starts a web server that runs until Ctrl-C (tests/serve drives the app, in a browser too)",
    ("multimodal", ""): "needs a BRIGHT tree and a trained model (tests/multimodal/test_cli_train_predict.py runs "
    "index, default-config, train, predict and threshold end to end on generated ones)",
}


def readme_commands() -> list[list[str]]:
    """The ``changescope`` commands of the README's bash blocks, as argument lists."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "changescope":
                commands.append(words[1:])
    return commands


def _skip_reason(args: list[str]) -> str | None:
    for (verb, marker), why in NEEDS_USER_FILES.items():
        if args[0] == verb and any(marker in a for a in args[1:]):
            return why
    return None


def _tiny(args: list[str], shared: Path | None) -> list[str] | None:
    """The command on tiny inputs (``None``: it needs data that is absent here)."""
    args = list(args)
    if args[0] == "synth" and "--from-pair" in args:
        if shared is None:
            return None
        return [*args, "--size", "96"] if "--size" not in args else args
    if args[0] == "synth":
        return [*args, "--size", "128", "--months", "8"]
    if args[0] == "search" and "--like" in args:
        first = pd.read_parquet("run/changes.parquet", columns=["event_id"])["event_id"]
        if not len(first):
            return None
        args[args.index("--like") + 1] = str(first.iloc[0])
    return args


def test_readme_lists_the_commands_it_should():
    verbs = {c[0] for c in readme_commands()}
    assert {"synth", "inspect", "run", "score", "discover", "search", "evaluate", "report", "benchmark"} <= verbs
    assert all(any(_skip_reason(c) == why for c in readme_commands()) for why in NEEDS_USER_FILES.values())


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch, shared_data_or_none):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHANGESCOPE_OFFLINE", "1")
    monkeypatch.setenv("CHANGESCOPE_CACHE", str(tmp_path / "cache"))
    if shared_data_or_none is not None:
        (tmp_path / "oscd").symlink_to(shared_data_or_none / "oscd")
    ran = []
    for args in readme_commands():
        if _skip_reason(args):
            continue
        tiny = _tiny(args, shared_data_or_none)
        if tiny is None:
            continue
        with pytest.raises(SystemExit) as exit_info:
            main(tiny)
            raise SystemExit(0)
        assert exit_info.value.code in (0, None), f"changescope {' '.join(tiny)} exited {exit_info.value.code}"
        ran.append(tiny[0])
    assert {"synth", "inspect", "run", "score", "discover", "evaluate", "report", "benchmark"} <= set(ran)
    assert (tmp_path / "run" / "report.html").exists() and (tmp_path / "bench" / "benchmark.csv").exists()
