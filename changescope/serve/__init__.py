"""The analyst's workbench: a local web app over finished run folders (``changescope serve``).

``create_app(run_dirs)`` (:mod:`changescope.serve.app`) builds the FastAPI app; :class:`Workbench` holds its logic
free of HTTP. The API and the files it touches are in ``docs/webapp.md``.
"""

from __future__ import annotations

from changescope.serve.workbench import Workbench

__all__ = ["Workbench"]
