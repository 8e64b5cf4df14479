"""Embedding throughput: the whole pipeline against the bare encoder forward on the same tiles.

For each encoder (random weights), ``changescope.embed.embed_series`` embeds an in-memory synthetic series into a
temporary store (reading, band mapping, normalisation, forward, pooling, Zarr writes, flags: end to end), and the
bare encoder runs ``feature_map`` on the very tiles the pipeline builds, pre-loaded and pre-normalised as tensors
(the limit the pipeline can approach). The ratio pipeline / bare is the pipeline's efficiency (targets: >= 0.95 for
the neural encoders, >= 0.8 for ``spectral``). Encoders that are not registered are skipped with a note.

The reference makes the forward passes the pipeline makes, and nothing else: the same tiles, normalised as the
pipeline normalises them (NaN kept for encoders that accept it), in the same batches (the pipeline batches the tiles
of one block, so a 25-tile block is a batch of 16 and one of 9; an earlier version of this script batched across
blocks and dates, which measured fewer, fuller passes than the pipeline can make), on the same torch threads. The
bare and pipeline repeats alternate, so that both see the same machine (the best of each is kept): on a shared
machine, measure when it is quiet and report its load.

Usage::

    python benchmarks/embed_throughput.py [--encoders spectral resnet18 dinov2_s] [--size 512] [--dates 4]
        [--patch-size 32] [--batch-size 16] [--device auto] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from changescope.embed import BlockLayout, embed_series
from changescope.embed.pipeline import EncoderSpec, SeriesSource, build_encoder
from changescope.encoders import get_meta, list_encoders
from changescope.encoders.bands import band_indices, normalize
from changescope.grid import PatchGrid
from changescope.series import band_infos
from changescope.testing import make_test_series


def bare_tiles(ds, name: str, patch: int, device: str, batch_size: int):
    """The encoder and the normalised tile batches the pipeline feeds it (block by block), pre-loaded on the device."""
    infos = band_infos(ds)
    kwargs = () if get_meta(name).bands and not get_meta(name).adaptive_bands else (("bands", infos),)
    encoder = build_encoder(EncoderSpec(name, "random", kwargs, "changescope.encoders", device))
    idx = band_indices(infos, encoder.meta)
    grid = PatchGrid.for_series(ds, patch)
    layout = BlockLayout.plan(grid, encoder.meta.patch_size, encoder.meta.input_size)
    source = SeriesSource(ds, idx)
    batches, n_tiles = [], 0
    for t in range(ds.sizes["time"]):
        for br in range(layout.n_block_rows):
            for bc in range(layout.n_block_cols):
                r0, r1, c0, c1 = layout.block_patches(br, bc)
                ext_y, ext_x = layout.block_extent(r1 - r0), layout.block_extent(c1 - c0)
                ys = slice(r0 * patch, min(layout.height, r0 * patch + ext_y))
                xs = slice(c0 * patch, min(layout.width, c0 * patch + ext_x))
                refl, _ = source.read(t, ys, xs)
                pad = ((0, 0), (0, ext_y - refl.shape[1]), (0, ext_x - refl.shape[2]))
                pixels = np.pad(refl, pad, mode="reflect")
                e, s = layout.tile_extent, layout.tile
                tiles = [
                    pixels[:, ky * s : ky * s + e, kx * s : kx * s + e]
                    for ky in range(layout.n_tiles(r1 - r0))
                    for kx in range(layout.n_tiles(c1 - c0))
                ]
                n_tiles += len(tiles)
                batches += [
                    normalize(
                        torch.from_numpy(np.stack(tiles[i : i + batch_size])).to(device),
                        encoder.meta.normalization,
                        keep_nan=encoder.meta.accepts_nan,
                    )
                    for i in range(0, len(tiles), batch_size)
                ]
    return encoder, batches, n_tiles, layout


def time_bare(encoder, batches) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        for x in batches:
            encoder.feature_map(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


def time_pipeline(ds, name: str, patch: int, device: str, batch_size: int, out: Path) -> float:
    start = time.perf_counter()
    embed_series(
        ds, name, weights="random", patch_size=patch, out=out, batch_size=batch_size, device=device, progress=False
    )
    return time.perf_counter() - start


def time_both(ds, name: str, patch: int, device: str, batch_size: int, repeat: int, tmp: Path):
    """Best bare and best pipeline time over ``repeat`` alternating repeats (after one warm-up of each)."""
    encoder, batches, n_tiles, layout = bare_tiles(ds, name, patch, device, batch_size)
    small = ds.isel(time=[0], y=slice(0, 2 * patch), x=slice(0, 2 * patch))
    embed_series(small, name, weights="random", patch_size=patch, out=tmp / "warm.zarr", device=device, progress=False)
    with torch.inference_mode():
        encoder.feature_map(batches[0])  # warm-up
    bare = pipe = float("inf")
    for i in range(repeat):
        bare = min(bare, time_bare(encoder, batches))
        pipe = min(pipe, time_pipeline(ds, name, patch, device, batch_size, tmp / f"run{i}.zarr"))
    return bare, pipe, n_tiles, layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["spectral", "resnet18", "dinov2_s"])
    parser.add_argument("--size", type=int, default=512, help="raster side in pixels")
    parser.add_argument("--dates", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats, alternating (best is kept)")
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    ds = make_test_series(seed=0, n_time=args.dates, height=args.size, width=args.size)
    available = list_encoders()
    print(
        f"series: {args.dates} dates x {args.size}x{args.size} px, patch {args.patch_size} px; device {device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    rows = []
    for name in args.encoders:
        if name not in available:
            print(f"  skip {name}: not registered yet")
            continue
        grid = PatchGrid.for_series(ds, args.patch_size)
        patches = args.dates * grid.n_rows * grid.n_cols
        with tempfile.TemporaryDirectory() as tmp:
            bare, pipe, n_tiles, layout = time_both(
                ds, name, args.patch_size, device, args.batch_size, args.repeat, Path(tmp)
            )
        rows.append((name, n_tiles, layout.tile_extent, patches / pipe, patches / bare, bare / pipe))
    print(f"{'encoder':<10} {'tiles':>6} {'tile px':>8} {'pipeline p/s':>13} {'bare p/s':>10} {'ratio':>6}")
    for name, n_tiles, extent, pipe_rate, bare_rate, ratio in rows:
        print(f"{name:<10} {n_tiles:>6} {extent:>8} {pipe_rate:>13,.0f} {bare_rate:>10,.0f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
