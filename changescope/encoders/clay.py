"""Placeholder while this encoder family is being written."""
