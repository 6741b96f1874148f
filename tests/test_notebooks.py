"""The documentation's notebooks execute top to bottom and still show what their text says.

Every ``docs/notebooks/*.ipynb`` runs in a fresh kernel (as ``make docs`` runs it); no
cell may raise, and the numbers each one prints must support its conclusion. The
notebooks are stored without outputs: the site executes them.
"""

import glob
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "docs", "notebooks", "*.ipynb")))


def numbers(pattern: str, text: str) -> dict[str, tuple[float, ...]]:
    """``{name: numbers}`` for every line that matches ``pattern`` (a name group first)."""
    return {m[0].strip(): tuple(float(v) for v in m[1:]) for m in re.findall(pattern, text, re.M)}


def check_quickstart(text: str) -> None:
    cosine = float(re.search(r"UORO is exact\): ([0-9.]+)", text).group(1))
    assert cosine > 0.99, cosine  # one step from zero history: UORO is exact


def check_gradient_quality(text: str) -> None:
    cosine = {name: v[0] for name, v in numbers(r"^ *(.+?)  cosine ([0-9.]+)", text).items()}
    assert len(cosine) == 9, cosine
    assert cosine["RTRL (exact)"] > 0.999, cosine
    assert cosine["OK, rank 8"] > cosine["OK, rank 2"] > cosine["UORO"], cosine
    assert cosine["SnAp-1"] > cosine["UORO"], cosine


def check_deep_lru_copy(text: str) -> None:
    runs = numbers(
        r"^(.+?): length reached (\d+); .*?, ([0-9.]+) bits over the last 5 chunks", text
    )
    (snap_length, snap_bits), (tbptt_length, _) = runs["SnAp-1"], runs["TBPTT(2)"]
    assert snap_length >= 5 and snap_length > tbptt_length, runs
    assert snap_bits < 1.0, runs  # the no-memory floor is 2 bits per recall step


def check_bring_your_own_model(text: str) -> None:
    losses = numbers(r"^(.+?) loss: first 500 steps ([0-9.]+), last 500 ([0-9.]+)", text)
    assert set(losses) == {
        "plain JAX, UORO",
        "plain JAX, SnAp-1",
        "plain JAX, e-prop",
        "nnx GRU, UORO",
        "nnx GRU, SnAp-1",
        "Equinox GRU, UORO",
        "Equinox GRU, e-prop",
    }, losses
    for name, (_, last) in losses.items():
        assert last < 0.25, (name, last)  # half the no-memory loss (0.5)


CHECKS = {
    "quickstart": check_quickstart,
    "gradient_quality": check_gradient_quality,
    "deep_lru_copy": check_deep_lru_copy,
    "bring_your_own_model": check_bring_your_own_model,
}


def test_every_notebook_has_a_check():
    names = {os.path.splitext(os.path.basename(p))[0] for p in NOTEBOOKS}
    assert names == set(CHECKS), names


@pytest.mark.slow  # each notebook end to end: `make test-slow`, run by CI
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.basename(p))
def test_notebook_runs_and_shows_what_it_says(path, monkeypatch):
    # The kernel imports this checkout's uorojax, whatever the environment has installed.
    src = os.path.join(ROOT, "src")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    )
    nb = nbformat.read(path, as_version=4)
    stored = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in stored), "stored with outputs"
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(path)}},
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, [(e["ename"], e["evalue"]) for e in errors]
    text = "".join(
        o.get("text", "") for o in outputs if o.get("output_type") == "stream"
    ) + "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    CHECKS[os.path.splitext(os.path.basename(path))[0]](text)
