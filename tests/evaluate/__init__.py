"""Tests of changescope.evaluate (a package, so that module names like test_evaluate stay unique)."""
