"""Readers (one module per layout, a registry) and atomic writers."""

from changescope.io.registry import detect_format, get_reader, list_readers, open_series, register_reader

__all__ = ["detect_format", "get_reader", "list_readers", "open_series", "register_reader"]
