"""Object-store filesystems: endpoint and credentials, what a run may record of them, and one-line errors.

:func:`filesystem` builds the fsspec filesystem of a scheme (``s3`` through s3fs). Its endpoint and credentials
come from where boto finds them: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (/``AWS_SESSION_TOKEN``),
``AWS_PROFILE`` and ``~/.aws/{config,credentials}``, ``AWS_REGION``/``AWS_DEFAULT_REGION`` and, for an
S3-compatible store (MinIO, Ceph, a local moto), ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``). GDAL's
``AWS_S3_ENDPOINT`` (``host:port``, with ``AWS_HTTPS=NO`` for plain HTTP) is honoured when those are unset.
``storage_options`` (fsspec's, e.g. ``{"endpoint_url": ..., "anon": True}``) override them; their credentials are
never written into a run folder (:func:`public_options`).

:func:`store_errors` turns a missing bucket, a denied access or an unreachable endpoint into the one-line errors of
:mod:`changescope.errors`, naming the URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from changescope.errors import ChangescopeError, MissingDependencyError, NoImagesFoundError, ParameterError

__all__ = ["SECRET_OPTIONS", "filesystem", "public_options", "store_errors"]

SECRET_OPTIONS = frozenset(
    {"key", "secret", "token", "password", "session_token", "aws_secret_access_key", "aws_session_token", "sas_token"}
)
"""``storage_options`` keys never written into a run folder (:func:`public_options`)."""

_DEFAULTS: dict[str, dict[str, Any]] = {
    # listings are not cached: a run folder changes under the same filesystem object while a run writes it;
    # files are read in 1 MiB ranges (s3fs reads ahead 50 MiB by default: whole COGs for a window of one)
    "s3": {"use_listings_cache": False, "default_block_size": 2**20},
}


def _gdal_endpoint() -> str | None:
    """The endpoint URL from GDAL's ``AWS_S3_ENDPOINT`` (+ ``AWS_HTTPS``), when boto's variables are unset."""
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return None
    host = os.environ.get("AWS_S3_ENDPOINT")
    if not host:
        return None
    if "://" in host:
        return host
    https = os.environ.get("AWS_HTTPS", "YES").upper() not in ("NO", "FALSE", "0", "OFF")
    return f"{'https' if https else 'http'}://{host}"


def filesystem(protocol: str, storage_options: Mapping[str, Any]) -> Any:
    """The fsspec filesystem for ``protocol`` with the defaults above and ``storage_options`` over them.

    Raises:
        MissingDependencyError: The filesystem's package (s3fs for ``s3://``) is not installed.
        ParameterError: fsspec knows no such protocol.
    """
    import fsspec

    options = {**_DEFAULTS.get(protocol, {}), **storage_options}
    if protocol == "s3":
        endpoint = _gdal_endpoint()
        client = dict(options.get("client_kwargs") or {})
        if endpoint and "endpoint_url" not in options and "endpoint_url" not in client:
            options["endpoint_url"] = endpoint
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError as err:
        raise MissingDependencyError(
            f"{protocol}:// URLs need a package that is not installed ({err}); for S3: pip install "
            "'changescope[s3]' (s3fs)"
        ) from None
    except ValueError as err:
        raise ParameterError(f"{protocol}:// is not a storage fsspec knows ({err})") from None


def public_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without credentials (:data:`SECRET_OPTIONS`, at any depth): what may be recorded in a run."""
    return {
        k: public_options(v) if isinstance(v, Mapping) else v
        for k, v in options.items()
        if k.lower() not in SECRET_OPTIONS
    }


def _reason(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextmanager
def store_errors(path: object, what: str = "read") -> Iterator[None]:
    """Turn the errors of an object store (missing bucket, denied access, no endpoint) into one-line errors.

    ``path`` is a local path (its errors pass through unchanged) or a
    :class:`~changescope.storepath.StorePath` (anything with a ``url``: this module sits below it).

    Raises:
        NoImagesFoundError: The bucket or prefix does not exist.
        ParameterError: Access is denied, or the store is unreachable.
    """
    url = getattr(path, "url", None)
    if not isinstance(url, str):
        yield
        return
    try:
        yield
    except (ChangescopeError, FileExistsError):  # FileExistsError: a conditional create lost, for the caller
        raise
    except FileNotFoundError as err:
        raise NoImagesFoundError(f"{url!r} does not exist ({_reason(err)}); check the bucket and the prefix") from None
    except PermissionError as err:
        raise ParameterError(
            f"cannot {what} {url!r}: access denied ({_reason(err)}); check the credentials (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket's permissions"
        ) from None
    except Exception as err:
        if not _is_store_error(err):
            raise
        raise ParameterError(
            f"cannot {what} {url!r} ({type(err).__name__}: {_reason(err)}); check the endpoint "
            "(AWS_ENDPOINT_URL), the credentials and the network"
        ) from None


def _is_store_error(err: BaseException) -> bool:
    """Whether ``err`` comes from the storage client (connection, credentials, protocol), not from changescope."""
    if isinstance(err, OSError | TimeoutError):
        return True
    module = type(err).__module__
    return module.startswith(("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec"))
