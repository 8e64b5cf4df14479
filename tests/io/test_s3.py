"""Object stores (issue 15): series read from, and run folders written to, an S3-compatible store.

A moto server on 127.0.0.1 plays S3; the AWS_* variables point boto (and so s3fs) at it with fake credentials, as a
user points changescope at MinIO or Ceph. Nothing here reaches beyond 127.0.0.1. The data are seeded test series,
uploaded with boto3 (not with changescope's own writer), and every S3 result is compared with the same input or
run read or written locally.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import changescope
from changescope.errors import NoImagesFoundError, ParameterError, UnknownFormatError
from changescope.fingerprint import input_fingerprint
from changescope.io.writers import write_series_folder, write_series_zarr
from changescope.storepath import StorePath, as_path, public_options
from changescope.testing import make_test_series

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def endpoint():
    """A moto S3 server on 127.0.0.1 (a free port), for the module."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint, monkeypatch, tmp_path):
    """AWS_* variables for the moto endpoint (fake credentials, no ~/.aws) and a fresh bucket; yields its client."""
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_HTTPS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    s3fs.S3FileSystem.clear_instance_cache()  # filesystems are cached by options, not by environment
    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"cs-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    s3fs.S3FileSystem.clear_instance_cache()


def upload(client, bucket: str, local: Path, prefix: str) -> str:
    """Upload every file under ``local`` to ``s3://bucket/prefix/`` with boto3; return the URL."""
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(local).as_posix()}")
    return f"s3://{bucket}/{prefix}"


@pytest.fixture(scope="module")
def series():
    return make_test_series(seed=7, n_time=4, cloud_fraction=0.2, with_labels=True, height=96, width=80)


def assert_same_series(remote, local):
    assert remote.sizes == local.sizes
    np.testing.assert_array_equal(remote["time"].values, local["time"].values)
    np.testing.assert_array_equal(remote["band"].values, local["band"].values)
    np.testing.assert_array_equal(remote["image"].values, local["image"].values)
    np.testing.assert_array_equal(remote["valid"].values, local["valid"].values)
    assert remote.rio.crs == local.rio.crs
    assert remote.rio.transform() == local.rio.transform()


def test_cog_folder_from_s3_equals_local(s3, tmp_path, series):
    client, bucket = s3
    local = write_series_folder(series, tmp_path / "series", cog=True)
    url = upload(client, bucket, local, "area/series")
    for given in (url, url + "/", StorePath(url)):
        remote = changescope.open(given)
        assert remote.attrs["format"] == "geotiff_folder"
        assert remote.attrs["source"] == url
        assert_same_series(remote, changescope.open(local))
    np.testing.assert_array_equal(remote["labels"].values, series["labels"].values)
    assert all(f.startswith(f"{url}/") and f.endswith(".tif") for f in remote.attrs["files"])


def test_cog_reads_are_lazy_and_windowed(s3, tmp_path, monkeypatch):
    import s3fs

    from changescope.io.raster import read_lazy
    from changescope.io.writers import write_geotiff
    from changescope.testing import TEST_CRS, utm_transform

    client, bucket = s3
    pixels = np.random.default_rng(3).integers(0, 10000, size=(2, 1536, 1536), dtype=np.uint16)  # incompressible
    local = write_geotiff(tmp_path / "2020-01-01.tif", pixels, crs=TEST_CRS, transform=utm_transform(), cog=True)
    client.upload_file(str(local), bucket, "big/2020-01-01.tif")
    fetched: list[int] = []
    original = s3fs.core.S3File._fetch_range

    def counting(self, start, end):
        fetched.append(end - start)
        return original(self, start, end)

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    arr = read_lazy(f"s3://{bucket}/big/2020-01-01.tif", chunk=256)  # dask reads whole chunks
    assert hasattr(arr.data, "dask")
    opened = sum(fetched)
    window = arr.isel(y=slice(700, 710), x=slice(900, 907)).values
    np.testing.assert_array_equal(window, pixels[:, 700:710, 900:907])
    size = local.stat().st_size
    assert opened < size / 4  # opening reads the header, not the pixels
    assert sum(fetched) - opened < size / 4  # one window reads its chunk's tiles (1 MiB ranges), not the file


def test_zarr_from_s3_equals_local(s3, tmp_path, series):
    client, bucket = s3
    local = write_series_zarr(series, tmp_path / "series.zarr")
    url = upload(client, bucket, local, "stores/series.zarr")
    remote = changescope.open(url)
    assert remote.attrs["format"] == "zarr"
    assert_same_series(remote, changescope.open(local))
    np.testing.assert_array_equal(remote["labels"].values, series["labels"].values)


def test_storage_options_reach_the_filesystem(s3, endpoint, monkeypatch, tmp_path, series):
    client, bucket = s3
    url = upload(client, bucket, write_series_zarr(series, tmp_path / "s.zarr"), "opts/s.zarr")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ParameterError, match=r"cannot read 's3://.*opts/s\.zarr'"):
        changescope.open(url, storage_options={"config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}})
    ds = changescope.open(url, storage_options={"endpoint_url": endpoint})
    assert ds.sizes["time"] == series.sizes["time"]
    with pytest.raises(ParameterError, match="storage_options apply to object-store URLs"):
        changescope.open(tmp_path / "s.zarr", storage_options={"anon": True})


def test_gdal_style_endpoint_variable(s3, endpoint, monkeypatch, tmp_path, series):
    client, bucket = s3
    url = upload(client, bucket, write_series_zarr(series, tmp_path / "s.zarr"), "gdal/s.zarr")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_S3_ENDPOINT", endpoint.removeprefix("http://"))
    monkeypatch.setenv("AWS_HTTPS", "NO")
    assert changescope.open(url).sizes["time"] == series.sizes["time"]


@pytest.mark.parametrize("where", ["missing bucket", "missing prefix", "empty prefix"])
def test_missing_location_is_one_clear_error(s3, where):
    client, bucket = s3
    if where == "empty prefix":
        client.put_object(Bucket=bucket, Key="notes/readme.txt", Body=b"no images here")
    url = {
        "missing bucket": f"s3://no-such-{bucket}/series",
        "missing prefix": f"s3://{bucket}/nothing/here",
        "empty prefix": f"s3://{bucket}/notes",
    }[where]
    error = UnknownFormatError if where == "empty prefix" else NoImagesFoundError
    with pytest.raises(error) as info:
        changescope.open(url)
    message = str(info.value)
    assert url in message and "\n" not in message


def test_local_only_format_refused_for_urls(s3):
    _, bucket = s3
    with pytest.raises(ParameterError, match="reads local files only"):
        changescope.open(f"s3://{bucket}/x", format="oscd")


def test_fingerprint_follows_the_objects(s3, tmp_path, series):
    client, bucket = s3
    url = upload(client, bucket, write_series_folder(series, tmp_path / "s"), "fp")
    first = input_fingerprint(url)
    assert input_fingerprint(url + "/") == first == input_fingerprint(StorePath(url))
    key = "fp/2020-02-01.tif"
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body)  # the same bytes again: nothing changed
    assert input_fingerprint(url) == first
    client.put_object(Bucket=bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))  # one bit of one object
    assert input_fingerprint(url) != first
    with pytest.raises(ParameterError, match="does not exist"):
        input_fingerprint(f"s3://{bucket}/nope")


def test_store_path_basics(s3):
    _, bucket = s3
    p = as_path(f"s3://{bucket}/a/b/c.tif")
    assert isinstance(p, StorePath) and p.name == "c.tif" and p.stem == "c" and p.suffix == ".tif"
    assert p.parent == StorePath(f"s3://{bucket}/a/b") and p.parent / "c.tif" == p
    assert p.with_name("d.tif").url == f"s3://{bucket}/a/b/d.tif"
    assert p.relative_to(StorePath(f"s3://{bucket}/a")) == "b/c.tif"
    assert isinstance(as_path("relative/dir"), Path)
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "e", "aws_session_token": 1}}
    assert public_options(options) == {"client_kwargs": {"endpoint_url": "e"}}


# -- runs ----------------------------------------------------------------------------------------------------------
RUN = {"patch_size": 16}


@pytest.fixture(scope="module")
def run_series():
    ds = make_test_series(seed=11, n_time=6, cloud_fraction=0.1, height=64, width=64)
    ds["image"][3:, :, :16, 16:32] = 200  # a patch changes from the fourth date on: the runs find something
    return ds


def same_results(a: Path | StorePath, b: Path | StorePath) -> None:
    """The two run folders hold the same scores, events and changes."""
    import geopandas as gpd

    from changescope.storepath import open_binary

    for name in ("patch_scores.parquet", "events.parquet"):
        with open_binary(a / name) as fa, open_binary(b / name) as fb:
            pd.testing.assert_frame_equal(pd.read_parquet(fa), pd.read_parquet(fb))
    with open_binary(a / "changes.parquet") as fa, open_binary(b / "changes.parquet") as fb:
        left, right = gpd.read_parquet(fa), gpd.read_parquet(fb)
    pd.testing.assert_frame_equal(
        pd.DataFrame(left.drop(columns="geometry")), pd.DataFrame(right.drop(columns="geometry"))
    )
    assert left.crs == right.crs and list(left.geometry.to_wkb()) == list(right.geometry.to_wkb())
    with open_binary(a / "change_vectors.npy") as fa, open_binary(b / "change_vectors.npy") as fb:
        np.testing.assert_array_equal(np.load(fa), np.load(fb))


@pytest.mark.slow  # four small runs (about 40 s on two shared cores)
def test_run_with_input_on_s3_matches_local(s3, tmp_path, run_series):
    from changescope.run import RunConfig, load_run, run_pipeline

    client, bucket = s3
    local = write_series_folder(run_series, tmp_path / "series", cog=True)
    url = upload(client, bucket, local, "aoi/series")
    here = run_pipeline(local, tmp_path / "local_run", RunConfig(**RUN), progress=False)
    there = run_pipeline(url, tmp_path / "s3_input_run", RunConfig(**RUN), progress=False)
    assert there.n_events == here.n_events > 0
    same_results(tmp_path / "local_run", tmp_path / "s3_input_run")
    run = load_run(tmp_path / "s3_input_run")
    assert run["source"] == url and run["aoi"] == "series"
    assert changescope.run.RunDir(tmp_path / "s3_input_run").open_input(run) is not None

    # a rerun reuses the embeddings; a changed object recomputes them
    stamp = (tmp_path / "s3_input_run" / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns
    run_pipeline(url, tmp_path / "s3_input_run", RunConfig(**RUN), progress=False)
    assert (tmp_path / "s3_input_run" / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns == stamp
    changed = run_series.copy(deep=True)
    changed["image"][-1, :, :40, :40] = 9000
    write_series_folder(changed.isel(time=[-1]), tmp_path / "last", cog=True)
    last = next(p.name for p in (tmp_path / "last").glob("*.tif") if not p.name.endswith(".mask.tif"))
    client.upload_file(str(tmp_path / "last" / last), bucket, f"aoi/series/{last}")
    run_pipeline(url, tmp_path / "s3_input_run", RunConfig(**RUN), progress=False)
    assert (tmp_path / "s3_input_run" / "embeddings.zarr" / ".zattrs").stat().st_mtime_ns != stamp


def test_cli_run_reads_s3_and_fails_in_one_line(s3, tmp_path, run_series, capsys):
    from changescope.cli.app import main

    client, bucket = s3
    url = upload(client, bucket, write_series_folder(run_series, tmp_path / "series", cog=True), "cli/series")
    main(["run", url, "--out", str(tmp_path / "cli_run"), "--patch-size", "16", "--no-report", "--quiet"])
    assert (tmp_path / "cli_run" / "run.json").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["run", f"s3://{bucket}/cli/nothing", "--out", str(tmp_path / "other"), "--no-report", "--quiet"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and f"s3://{bucket}/cli/nothing" in err
    assert "Traceback" not in err and "\n" not in err


# -- run folders on S3 ---------------------------------------------------------------------------------------------
def objects(client, bucket: str, prefix: str) -> dict[str, str]:
    """``{relative key: ETag}`` of every object below ``prefix`` (listed with boto3)."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) + 1 :]] = obj["ETag"]
    return out


@pytest.mark.slow  # three small runs, a rescore and a report (about 40 s on two shared cores)
def test_run_folder_on_s3_matches_local_and_resumes(s3, tmp_path, run_series):
    import json

    import rasterio

    from changescope.config import ScoreConfig
    from changescope.report import build_report
    from changescope.run import RunConfig, load_run, rescore, run_pipeline

    client, bucket = s3
    local_input = write_series_folder(run_series, tmp_path / "series", cog=True)
    here = run_pipeline(local_input, tmp_path / "run", RunConfig(**RUN), progress=False)
    url = f"s3://{bucket}/runs/one"
    there = run_pipeline(local_input, url, RunConfig(**RUN), progress=False)
    assert there.out == StorePath(url) and there.n_events == here.n_events > 0
    remote = StorePath(url)
    same_results(tmp_path / "run", remote)

    # the same files, and nothing else (no lock, no temporary object)
    keys = objects(client, bucket, "runs/one")
    local_files = {p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert set(keys) == local_files
    assert json.loads((remote / "run.json").read_text())["outputs"] == load_run(tmp_path / "run")["outputs"]
    for name in ("maps/change_date.tif", sorted(k for k in keys if k.startswith("maps/score_"))[-1]):
        with rasterio.open(tmp_path / "run" / name) as a, rasterio.open(f"{url}/{name}", opener=remote.fs) as b:
            assert b.crs == a.crs and b.transform == a.transform and b.profile["driver"] == "GTiff"
            np.testing.assert_array_equal(b.read(), a.read())
            assert b.overviews(1) == a.overviews(1)  # still a COG

    # a rerun reuses the embeddings (not one of their objects is rewritten) and gives the same results
    run_pipeline(local_input, url, RunConfig(**RUN), progress=False)
    again = objects(client, bucket, "runs/one")
    assert {k: v for k, v in again.items() if "embeddings.zarr" in k} == {
        k: v for k, v in keys.items() if "embeddings.zarr" in k
    }
    same_results(tmp_path / "run", remote)

    # rescoring in place and the report work on the object store too
    rescored = rescore(url, ScoreConfig(false_alarms=50))
    local_rescored = rescore(tmp_path / "run", ScoreConfig(false_alarms=50))
    assert rescored.n_events == local_rescored.n_events
    same_results(tmp_path / "run", remote)
    page = build_report(url)
    assert page == remote / "report.html" and "data:image/png;base64," in page.read_text()


def test_out_bucket_must_exist_and_lie_outside_the_input(s3, tmp_path, run_series, capsys):
    from changescope.cli.app import main
    from changescope.run import RunConfig, run_pipeline

    client, bucket = s3
    missing = f"no-such-{bucket}"
    with pytest.raises(ParameterError, match=f"bucket '{missing}' does not exist"):
        run_pipeline(tmp_path / "anything", f"s3://{missing}/run", RunConfig(**RUN), progress=False)
    assert missing not in {b["Name"] for b in client.list_buckets()["Buckets"]}  # never created
    url = upload(client, bucket, write_series_folder(run_series.isel(time=[0, 1]), tmp_path / "s"), "in/series")
    with pytest.raises(ParameterError, match="lies inside the input"):
        run_pipeline(url, f"{url}/run", RunConfig(**RUN), progress=False)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["run", str(tmp_path / "s"), "--out", f"s3://{missing}/run", "--no-report", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and f"s3://{missing}/run" in err and "\n" not in err


def test_lock_is_a_conditional_create(s3):
    import json
    import os
    import socket

    from changescope.rundir import LOCK, RunDir, RunLockedError

    client, bucket = s3
    rd = RunDir(f"s3://{bucket}/locked")
    with rd.lock("run"):
        held = json.loads(client.get_object(Bucket=bucket, Key=f"locked/{LOCK}")["Body"].read())
        assert held["pid"] == os.getpid() and held["command"] == "run"
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"), RunDir(f"s3://{bucket}/locked").lock("score"):
            pass
    assert objects(client, bucket, "locked") == {}  # released
    # another host's lock is respected; a lock of a dead process on this host is taken over
    other = {"pid": 1, "host": "elsewhere", "command": "run", "started": "2026-01-01T00:00:00+00:00"}
    client.put_object(Bucket=bucket, Key=f"locked/{LOCK}", Body=json.dumps(other).encode())
    with pytest.raises(RunLockedError, match="pid 1"), rd.lock():
        pass
    dead = {**other, "host": socket.gethostname(), "pid": 2**22 + 12345}
    client.put_object(Bucket=bucket, Key=f"locked/{LOCK}", Body=json.dumps(dead).encode())
    with rd.lock():
        assert json.loads(client.get_object(Bucket=bucket, Key=f"locked/{LOCK}")["Body"].read())["pid"] == os.getpid()


def test_atomic_upload_leaves_nothing_on_failure(s3):
    from changescope.io.writers import atomic_path

    client, bucket = s3
    target = StorePath(f"s3://{bucket}/atomic/file.json")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert objects(client, bucket, "atomic") == {}
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and set(objects(client, bucket, "atomic")) == {"file.json"}
