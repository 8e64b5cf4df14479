"""Placeholder while the reader is being written."""
