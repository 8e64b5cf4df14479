import importlib.util

import numpy as np
import pytest
from PIL import Image

from changescope.errors import ParameterError
from changescope.report import build_report, explore
from changescope.report.explore import embed_2d
from changescope.report.html import SECTIONS


def test_explore_writes_pca_and_tsne(run_dir):
    notes = []
    paths = explore(run_dir, ["pca", "tsne", "umap"], note=notes.append)
    names = {p.name for p in paths}
    assert {"explore_embeddings_pca.png", "explore_embeddings_tsne.png"} <= names
    assert {"explore_changes_pca.png", "explore_changes_tsne.png"} <= names
    for p in paths:
        assert p.parent == run_dir / "figures"
        with Image.open(p) as im:
            w, h = im.size
            pixels = np.asarray(im.convert("L"))
        assert w > 100 and h > 100 and pixels.std() > 0
    if importlib.util.find_spec("umap") is None:
        assert any("UMAP skipped" in n for n in notes)
        assert not any("umap" in n for n in names)
    else:
        assert {"explore_embeddings_umap.png", "explore_changes_umap.png"} <= names
    assert SECTIONS["explore"] in build_report(run_dir).read_text(encoding="utf-8")


def test_explore_is_seeded(run_dir):
    a = explore(run_dir, ["tsne"], max_points=80, seed=1, note=lambda _: None)
    first = [p.read_bytes() for p in a]
    b = explore(run_dir, ["tsne"], max_points=80, seed=1, note=lambda _: None)
    assert first == [p.read_bytes() for p in b]


def test_explore_rejects_unknown_methods(run_dir):
    with pytest.raises(ParameterError, match="choose among"):
        explore(run_dir, ["mds"])


def test_embed_2d_shapes():
    x = np.random.default_rng(0).normal(size=(40, 5))
    for method in ("pca", "tsne"):
        assert embed_2d(x, method).shape == (40, 2)
    assert embed_2d(x[:, :1], "pca").shape == (40, 2)
