"""Fixtures of the web-app tests (``changescope serve``)."""

from __future__ import annotations

from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------------------------------------
# Browser tests (tests/serve/test_browser.py): one small seeded run, made once per session.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder of a seeded 256x256, 12-date synthetic AOI with ~20 events in 4 change types.

    Small patches (8 px) give enough events to rank; k-means gives every change a type (HDBSCAN leaves
    this few events unclustered), so that marking a type has something to act on. About 15 s.
    """
    import changescope
    from changescope.run import RunConfig, run_pipeline
    from changescope.synthetic import make_aoi

    root = tmp_path_factory.mktemp("browser_run")
    info = make_aoi(root / "aoi", 0, 256, 12)
    ds = changescope.open(root / "aoi", aoi=info.aoi)
    result = run_pipeline(
        ds, root / "run", RunConfig(seed=0, patch_size=8, cluster="kmeans", n_clusters=4), progress=False
    )
    assert _n_events(result.out) >= 10, "the browser run needs at least 10 events"
    return Path(result.out)


def _n_events(run: Path) -> int:
    import pandas as pd

    return len(pd.read_parquet(run / "changes.parquet", columns=["event_id"]))


# ---------------------------------------------------------------------------------------------------------------------
# API tests (tests/serve/test_api.py): a second AOI, so that search and lists span runs.
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def second_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another seeded AOI (seed 1, 192x192, 12 dates), run like :func:`browser_run`."""
    import changescope
    from changescope.run import RunConfig, run_pipeline
    from changescope.synthetic import make_aoi

    root = tmp_path_factory.mktemp("second_run")
    info = make_aoi(root / "aoi", 1, 192, 12)
    ds = changescope.open(root / "aoi", aoi=info.aoi)
    result = run_pipeline(
        ds, root / "run2", RunConfig(seed=0, patch_size=8, cluster="kmeans", n_clusters=3), progress=False
    )
    return Path(result.out)
