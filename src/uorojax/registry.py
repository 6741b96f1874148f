"""One registry: the names that configs, the runner, the benchmark and the tests use.

``ESTIMATORS`` maps a config's ``algorithm`` to an :class:`EstimatorEntry`: how to build
it from a model and the options a config carries, and which batch modes make sense for
it. ``TASKS`` maps a config's ``task`` to its stream (or, for influence balancing, its
whole problem). A new estimator is one file under ``uorojax/estimators/`` and one line
here; ``tests/test_protocol.py`` then checks it against the protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from uorojax import checks, tasks
from uorojax.estimators import Estimator, as_one_system, per_stream, rtrl, tbptt, uoro
from uorojax.estimators.kf_rtrl import kf_rtrl
from uorojax.estimators.ok import ok
from uorojax.estimators.snap import snap1
from uorojax.structure import Structure
from uorojax.tree import repeat_streams


class Options(NamedTuple):
    """What a config can say about an estimator; each entry reads what it uses.

    Attributes:
      truncation: window length (TBPTT, truncated UORO).
      eps: stabiliser of UORO's and KF-RTRL's rescaling; OK's zero tolerance for singular values.
      num_samples: UORO's independent tangent pairs.
      rank: OK's number of Kronecker terms.
      structure: the model's :class:`~uorojax.structure.Structure` (SnAp-1, KF-RTRL).
      example_x, example_y: one step's input and target (window buffers).
    """

    truncation: int = 1
    eps: float = 1e-7
    num_samples: int = 1
    rank: int = 1
    structure: Structure | None = None
    example_x: Any = None
    example_y: Any = None


class EstimatorEntry(NamedTuple):
    """How to build one registered estimator.

    Attributes:
      build: ``(apply_fn, loss_fn, options) -> Estimator`` for one stream (or one system).
      batch_modes: the batch modes that make sense: ``"per_stream"`` (a carry per
        stream) and ``"shared"`` (the batch as one system, :func:`~uorojax.as_one_system`).
      uses: the :class:`Options` fields it reads; a config that sets another one to a
        non-default value is refused.
    """

    build: Callable[[Callable, Callable, Options], Estimator]
    batch_modes: tuple[str, ...]
    uses: tuple[str, ...]


def _windowed(o: Options) -> dict:
    return {"example_x": o.example_x, "example_y": o.example_y}


ESTIMATORS: dict[str, EstimatorEntry] = {
    "uoro": EstimatorEntry(lambda apply, loss, o: uoro(apply, loss, truncation=o.truncation, eps=o.eps, num_samples=o.num_samples, **_windowed(o)), ("per_stream", "shared"), ("truncation", "eps", "num_samples")),
    "rtrl": EstimatorEntry(lambda apply, loss, o: rtrl(apply, loss), ("per_stream", "shared"), ()),
    "tbptt": EstimatorEntry(lambda apply, loss, o: tbptt(apply, loss, o.truncation, **_windowed(o)), ("per_stream", "shared"), ("truncation",)),
    "kf_rtrl": EstimatorEntry(lambda apply, loss, o: kf_rtrl(apply, loss, structure=o.structure, eps=o.eps), ("per_stream",), ("eps",)),
    "ok": EstimatorEntry(lambda apply, loss, o: ok(apply, loss, structure=o.structure, rank=o.rank, eps=o.eps), ("per_stream",), ("eps", "rank")),
    "snap1": EstimatorEntry(lambda apply, loss, o: snap1(apply, loss, structure=o.structure), ("per_stream",), ()),
}  # fmt: skip

TASKS: dict[str, Callable[..., Any]] = {
    **tasks.SYMBOL_TASKS,
    "influence_balancing": tasks.influence_balancing,
}


def build_estimator(
    algorithm: str,
    apply_fn: Callable,
    loss_fn: Callable,
    *,
    num_streams: int | None = None,
    batch_mode: str = "per_stream",
    options: Options | None = None,
) -> Estimator:
    """The estimator a config names, wrapped for its batch mode.

    Args:
      algorithm: a key of :data:`ESTIMATORS`.
      apply_fn, loss_fn: the single-stream model.
      num_streams: None for one stream, else B streams.
      batch_mode: ``"per_stream"`` or ``"shared"`` (used when ``num_streams`` is set).
      options: the estimator options; ``example_x``/``example_y`` are one stream's.

    Raises:
      ConfigError: for an unknown name, a batch mode the estimator does not support, or
        an option it does not use set to a non-default value.

    Example::

      est = uorojax.registry.build_estimator("tbptt", model.apply, loss,
          options=uorojax.registry.Options(truncation=16, example_x=x0, example_y=y0))
    """
    checks.one_of("algorithm", algorithm, tuple(ESTIMATORS))
    options = Options() if options is None else options
    entry = ESTIMATORS[algorithm]
    defaults = Options()
    for name in ("truncation", "eps", "num_samples", "rank"):
        if name not in entry.uses and getattr(options, name) != getattr(defaults, name):
            raise checks.ConfigError(
                f"{algorithm} does not use {name} (got {getattr(options, name)!r}); "
                f"it reads {', '.join(entry.uses) or 'none of the estimator options'}"
            )
    if num_streams is None:
        return entry.build(apply_fn, loss_fn, options)
    checks.one_of("batch_mode", batch_mode, ("per_stream", "shared"))
    if batch_mode not in entry.batch_modes:
        raise checks.ConfigError(
            f"{algorithm} supports batch_mode {' or '.join(entry.batch_modes)}, not "
            f"{batch_mode!r}: treating the batch as one system would not keep its structure"
        )
    if batch_mode == "shared":
        options = options._replace(  # repeat_streams leaves None as it is
            example_x=repeat_streams(options.example_x, num_streams),
            example_y=repeat_streams(options.example_y, num_streams),
        )
        return entry.build(*as_one_system(apply_fn, loss_fn), options)
    return per_stream(entry.build(apply_fn, loss_fn, options))
