"""Analysis: gradient quality against exact RTRL (:mod:`~uorojax.analysis.diagnostics`)
and the cost of compiled programs (:mod:`~uorojax.analysis.hlo`).

``uorojax.analysis.plots`` (figures of a run) needs the ``run`` extra and is imported on
its own.
"""

from uorojax.analysis import diagnostics, hlo

__all__ = ["diagnostics", "hlo"]
