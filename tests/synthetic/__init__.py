"""Tests of changescope.synthetic (a package, so that module names like test_events stay unique)."""
