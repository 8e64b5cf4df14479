import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changescope.report import build_report

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "render_report.py"


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("headless check needs /usr/bin/chromium (apt-get install chromium)")
    report = build_report(run_dir)
    out = tmp_path / "shot.png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(report), str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ok, total = proc.stdout.strip().rsplit(" ", 1)[-1].split("/")
    assert ok == total and int(total) > 0
    with Image.open(out) as im:
        assert im.size == (1280, 4000)
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10  # not blank
    assert len(np.unique(pixels.reshape(-1, 3)[::97], axis=0)) > 100
