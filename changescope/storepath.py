"""Object-store paths: one path type over fsspec, so that readers and the run folder work on S3 as on disk.

A :class:`StorePath` is an fsspec filesystem and a path in it (``StorePath("s3://bucket/series")``), with the part
of :class:`pathlib.Path`'s interface that the readers and :class:`~changescope.rundir.RunDir` use (``/``, ``name``,
``parent``, ``exists``, ``is_dir``, ``iterdir``, ``read_text``, ``stat``...). :func:`as_path` turns a URL
(``scheme://...``) into one and anything else into a :class:`~pathlib.Path`, so the same code reads and writes both.
It has no ``__fspath__``: a library that only takes local paths cannot silently write a local folder named
``s3:``.

How it reads and writes:

- listing, metadata and small files: the filesystem (``fs.ls``, ``fs.info``, ``fs.cat_file``);
- GeoTIFFs/COGs: rasterio with ``opener=`` the filesystem (GDAL reads only the byte ranges it needs through the
  fsspec file; no ``/vsis3/`` configuration, and GDAL itself never reaches the network);
- Zarr: an fsspec mapper (:meth:`StorePath.mapper`) for xarray and zarr;
- writes: :func:`changescope.io.writers.atomic_path` writes the file into a local temporary folder and uploads it
  whole (:meth:`StorePath.upload`), so an object is one PUT of a finished file and a reader never sees it half
  written. A folder (a Zarr store) is uploaded object by object, its metadata last.

Endpoint, credentials and errors: :mod:`changescope.objectstore` (``AWS_*`` variables, ``~/.aws``,
``storage_options``).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

from changescope.errors import ParameterError
from changescope.objectstore import SECRET_OPTIONS, filesystem, public_options, store_errors

__all__ = [
    "SECRET_OPTIONS",
    "AnyPath",
    "StorePath",
    "StoreStat",
    "as_path",
    "is_url",
    "open_binary",
    "public_options",
    "store_errors",
]

_METADATA = (".zattrs", ".zgroup", ".zarray", ".zmetadata", "zarr.json")
"""Zarr metadata objects: uploaded last, so that a half-uploaded store does not look like a store."""


def is_url(path: object) -> bool:
    """Whether ``path`` names an object-store location (``s3://...``, any ``scheme://`` but ``file://``)."""
    if isinstance(path, StorePath):
        return True
    text = str(path) if isinstance(path, str | os.PathLike) else ""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file"


@dataclass(frozen=True)
class StoreStat:
    """What :meth:`StorePath.stat` reports (the fields of :func:`os.stat` that changescope reads, and the ETag)."""

    st_size: int
    st_mtime_ns: int
    etag: str


@dataclass(frozen=True, eq=False)
class StorePath:
    """A location in an fsspec filesystem, with the pathlib-like methods changescope uses (module docstring).

    Args:
        url: ``scheme://bucket/key`` (a trailing ``/`` is dropped), or a :class:`StorePath`.
        storage_options: fsspec options for the filesystem (ignored when ``fs`` is given).
        fs: An fsspec filesystem to use (children share their parent's).

    Attributes:
        fs: The fsspec filesystem.
        path: The path in it, without the scheme (``bucket/key``).
        protocol: The scheme (``s3``).
    """

    fs: Any
    path: str
    protocol: str

    def __init__(
        self, url: str | StorePath, storage_options: Mapping[str, Any] | None = None, *, fs: Any = None
    ) -> None:
        if isinstance(url, StorePath):
            fs, url = fs or url.fs, url.url
        protocol, sep, rest = str(url).partition("://")
        if not sep or not protocol:
            raise ParameterError(f"{url!r} is not a URL (scheme://bucket/key)")
        object.__setattr__(self, "protocol", protocol)
        object.__setattr__(self, "fs", fs if fs is not None else filesystem(protocol, storage_options or {}))
        object.__setattr__(self, "path", posixpath.normpath("/" + rest).lstrip("/") if rest.strip("/") else "")

    # -- pure path operations ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``scheme://path``."""
        return f"{self.protocol}://{self.path}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"StorePath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StorePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("StorePath", self.url)

    def __truediv__(self, name: str | os.PathLike[str]) -> StorePath:
        return StorePath(f"{self.url.rstrip('/')}/{os.fspath(name).strip('/')}", fs=self.fs)

    @property
    def name(self) -> str:
        """The last path component."""
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        """The file extension of :attr:`name` (``".tif"``)."""
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        """:attr:`name` without :attr:`suffix`."""
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> StorePath:
        """The enclosing location (the bucket is its own parent)."""
        return StorePath(f"{self.protocol}://{posixpath.dirname(self.path)}", fs=self.fs)

    @property
    def bucket(self) -> str:
        """The first path component (the bucket or container)."""
        return self.path.split("/", 1)[0]

    def with_name(self, name: str) -> StorePath:
        """The sibling called ``name``."""
        return self.parent / name

    def resolve(self) -> StorePath:
        """Itself (object-store paths are absolute)."""
        return self

    def relative_to(self, other: StorePath) -> str:
        """This path below ``other``, as a ``/``-separated string.

        Raises:
            ValueError: It does not lie below ``other``.
        """
        if self.path == other.path:
            return ""
        if not self.path.startswith(other.path.rstrip("/") + "/"):
            raise ValueError(f"{self.url!r} is not below {other.url!r}")
        return self.path[len(other.path.rstrip("/")) + 1 :]

    # -- queries -------------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether an object or a prefix with objects is there."""
        return bool(self.path) and bool(self.fs.exists(self.path))

    def is_file(self) -> bool:
        """Whether an object is there."""
        return bool(self.path) and bool(self.fs.isfile(self.path))

    def is_dir(self) -> bool:
        """Whether objects lie below (or the path is a bucket)."""
        return bool(self.path) and bool(self.fs.isdir(self.path))

    def is_symlink(self) -> bool:
        """Always ``False``: object stores have no links."""
        return False

    def iterdir(self) -> Iterator[StorePath]:
        """The objects and prefixes directly below, sorted by name.

        Raises:
            FileNotFoundError: Nothing lies there.
        """
        names = sorted(str(p).rstrip("/") for p in self.fs.ls(self.path, detail=False))
        for child in names:
            if child != self.path:
                yield StorePath(f"{self.protocol}://{child}", fs=self.fs)

    def listing(self) -> list[tuple[StorePath, bool]]:
        """The children (as :meth:`iterdir`) and whether each is an object, in one listing request."""
        out = []
        for info in sorted(self.fs.ls(self.path, detail=True), key=lambda i: str(i["name"])):
            name = str(info["name"]).rstrip("/")
            if name != self.path:
                out.append((StorePath(f"{self.protocol}://{name}", fs=self.fs), info.get("type") == "file"))
        return out

    def glob(self, pattern: str) -> Iterator[StorePath]:
        """The children whose name matches ``pattern`` (one level, like ``Path.glob("*.tif")``)."""
        if not self.is_dir():
            return
        for child in self.iterdir():
            if fnmatch.fnmatchcase(child.name, pattern):
                yield child

    def stat(self) -> StoreStat:
        """Size, modification time and ETag of the object.

        Raises:
            FileNotFoundError: No object is there.
        """
        info = self.fs.info(self.path)
        modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0)
        tag = str(info.get("ETag") or info.get("etag") or info.get("md5") or "").strip('"')
        return StoreStat(int(info.get("size") or 0), int(stamp * 1e9), tag)

    def read_bytes(self) -> bytes:
        """The object's content.

        Raises:
            FileNotFoundError: No object is there.
        """
        data: bytes = self.fs.cat_file(self.path)
        return data

    def read_text(self, encoding: str = "utf-8") -> str:
        """The object's content, decoded."""
        return self.read_bytes().decode(encoding)

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A file object on the object (``"rb"``; ``"xb"`` creates it only if absent, else FileExistsError)."""
        # S3 parts are 5 MiB at least; the small read-ahead block (above) is for reading only
        write = {"block_size": 5 * 2**20} if self.protocol == "s3" and "r" not in mode else {}
        fh: IO[bytes] = self.fs.open(self.path, mode, **write)
        return fh

    def mapper(self) -> Any:
        """An fsspec mapper on this prefix, the store xarray and zarr read and write."""
        return self.fs.get_mapper(self.path)

    # -- changes -------------------------------------------------------------------------------------------------
    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing: object stores have no folders (and a bucket is never created here)."""

    def unlink(self, missing_ok: bool = False) -> None:
        """Delete the object.

        Raises:
            FileNotFoundError: It is absent and ``missing_ok`` is False.
        """
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove(self) -> None:
        """Delete the object, or every object below the prefix; nothing when absent."""
        if self.is_file():
            self.fs.rm_file(self.path)
        elif self.is_dir():
            self.fs.rm(self.path, recursive=True)

    def upload(self, local: Path) -> None:
        """Replace this object (or prefix) by the local file (or folder) ``local``.

        A file is one PUT. A folder replaces what was there object by object: the old metadata (Zarr ``.z*``,
        ``zarr.json``) goes first and the new metadata last, so that a half-replaced store never looks whole.
        """
        if local.is_file():
            if self.is_dir():
                self.remove()
            self.fs.put_file(str(local), self.path)
            return
        if self.exists():
            old = [p for p in self.fs.find(self.path) if posixpath.basename(p) in _METADATA]
            if old:
                self.fs.rm(old)
            self.remove()
        files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: (p.name in _METADATA, str(p)))
        for f in files:
            self.fs.put_file(str(f), f"{self.path}/{f.relative_to(local).as_posix()}")


AnyPath: TypeAlias = Path | StorePath
"""A local path or an object-store location."""


def as_path(path: str | os.PathLike[str] | StorePath, storage_options: Mapping[str, Any] | None = None) -> AnyPath:
    """A :class:`StorePath` for a URL (or a :class:`StorePath`), a :class:`~pathlib.Path` for anything else.

    Raises:
        ParameterError: ``storage_options`` are given with a local path.
    """
    if isinstance(path, StorePath):
        return path if not storage_options else StorePath(path.url, storage_options)
    if is_url(path):
        return StorePath(str(path), storage_options)
    if storage_options:
        raise ParameterError(
            f"storage_options apply to object-store URLs (s3://...), but {str(path)!r} is a local path; drop them"
        )
    return Path(path)


@contextmanager
def open_binary(path: AnyPath) -> Iterator[IO[bytes]]:
    """A binary file object on a local file or an object (pandas, pyarrow and numpy read these)."""
    with path.open("rb") as fh:
        yield fh
