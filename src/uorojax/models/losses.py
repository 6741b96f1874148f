"""Step losses: ``loss_fn(output, y) -> scalar`` for one step of one stream."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Cross-entropy in nats of integer ``label`` under ``logits`` (one step).

    A negative label is an ignored target (``uorojax.tasks.IGNORE_LABEL``, the copy
    task's steps outside recall): its loss is 0 and so is its gradient. For a label in
    ``[0, num_classes)`` this is optax's ``softmax_cross_entropy_with_integer_labels``.

    Example::

      uorojax.softmax_cross_entropy(jnp.zeros(4), -1)  # 0.0
    """
    ignored = label < 0
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(ignored, 0, label))
    return jnp.where(ignored, jnp.zeros_like(loss), loss)


def squared_error(output: jax.Array, target: jax.Array) -> jax.Array:
    """``0.5 * ||output - target||²`` summed over the output."""
    return 0.5 * jnp.sum(jnp.square(output - target))
