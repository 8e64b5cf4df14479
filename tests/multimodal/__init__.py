"""Tests of changescope.multimodal (optical/SAR change detection)."""
