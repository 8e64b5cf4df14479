import hashlib
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from changescope.errors import ParameterError
from changescope.report import build_report
from changescope.report.figures import curve_figure
from changescope.report.html import SECTIONS
from changescope.report.images import figure_png


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.h2, self.scripts, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "script":
            self.scripts.append(a)
        self._in = tag

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.h2.append(data)


def _parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_report_is_self_contained_with_every_section(run_dir):
    path = build_report(run_dir)
    assert path == run_dir / "report.html" and path.is_file()
    text = path.read_text(encoding="utf-8")
    page = _parse(path)
    for sid in ("overview", "scores", "gallery", "clusters", "parameters"):
        assert SECTIONS[sid] in page.h2
    assert SECTIONS["evaluation"] not in page.h2  # no metrics.json yet
    assert page.imgs and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert "http://" not in text and "https://" not in text
    assert all("src" not in s for s in page.scripts)  # inline script only
    info = json.loads((run_dir / "run.json").read_text())
    n_events = len(pd.read_parquet(run_dir / "changes.parquet", columns=["rank"]))
    assert len(page.imgs) >= info["n_dates"] + min(24, n_events)
    assert path.stat().st_size < 5_000_000
    assert "spectral" in text and info["versions"]["numpy"] in text


def test_report_is_deterministic(run_dir):
    first = hashlib.sha256(build_report(run_dir).read_bytes()).hexdigest()
    second = hashlib.sha256(build_report(run_dir).read_bytes()).hexdigest()
    assert first == second
    assert not list(run_dir.glob(".report.html.tmp-*"))


def test_gallery_size_follows_top(run_dir):
    small = _parse(build_report(run_dir, top=2))
    big = _parse(build_report(run_dir, top=6))
    assert len(big.imgs) - len(small.imgs) == 2 * 4  # a before/after pair per extra event


def test_metrics_add_the_evaluation_section(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("figures", "report.html"))
    fpr = np.linspace(0, 1, 11).tolist()
    metrics = {
        "patch": {
            "auc": 0.91,
            "ap": 0.77,
            "best_f1": 0.7,
            "threshold": 1.2,
            "precision": 0.8,
            "recall": 0.62,
            "roc": {"fpr": fpr, "tpr": np.sqrt(fpr).tolist()},
            "pr": {"precision": fpr[::-1], "recall": fpr},
        },
        "by_type": {"deforestation": {"auc": 0.95, "recall": 0.9}, "urban": {"auc": 0.81, "recall": 0.5}},
        "by_date": {"2018-05-01": {"auc": 0.88}},
        "pixel": {"f1": 0.66, "iou": 0.5},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "figures").mkdir()
    (run / "figures" / "roc.png").write_bytes(figure_png(curve_figure([0, 1], [0, 1], "roc", 0.5)))
    page_path = build_report(run)
    text = page_path.read_text(encoding="utf-8")
    assert SECTIONS["evaluation"] in _parse(page_path).h2
    for needle in (
        "0.91",
        "0.77",
        "deforestation",
        "urban",
        "2018-05-01",
        "Pixel level",
        'alt="roc curve"',
        'alt="pr curve"',
    ):
        assert needle in text


def test_not_a_run(tmp_path):
    with pytest.raises(ParameterError, match="holds no finished run"):
        build_report(tmp_path)


def test_import_has_no_side_effects():
    code = (
        "import sys, changescope.report, changescope.cli.report;"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time';"
        "assert 'sklearn' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
