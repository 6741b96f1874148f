"""Sphinx configuration of the uorojax documentation site (``make docs``).

The API reference documents the public names under their top-level spelling
(``uorojax.uoro``, ``uorojax.tasks.Copy``); which names go on which page is the list in
each ``docs/api/<layer>.md`` (an ``api-list`` block, see ``docs/_ext/uorojax_api.py``).
The build fails when a name of ``uorojax.__all__`` is on no page, when a reference does
not resolve (``nitpicky``) and when a notebook raises.
"""

import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
SRC = os.path.abspath(os.path.join(HERE, "..", "src"))
sys.path.insert(0, SRC)
# The notebooks' kernels import the same uorojax that the API reference documents.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

import sphinx.deprecation  # noqa: E402
import sphinx.util.inspect  # noqa: E402

import uorojax  # noqa: E402

# sphinx-autodoc-typehints 3.6 calls an API that Sphinx 9 deprecates (a Python warning
# printed on every page, not a Sphinx warning): noise until a release of it drops the call.
warnings.filterwarnings(
    "ignore",
    category=getattr(sphinx.deprecation, "RemovedInSphinx10Warning", DeprecationWarning),
    module="sphinx_autodoc_typehints.*",
)

project = "uorojax"
author = "the uorojax authors"
copyright = "the uorojax authors"  # noqa: A001
release = uorojax.__version__
version = release

extensions = [
    "myst_nb",  # markdown pages (MyST) and notebooks executed at build time
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # Google-style Args:/Returns:/Example:: (before typehints)
    "sphinx_autodoc_typehints",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "uorojax_api",  # the api-list directive, the coverage check, top-level link targets
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "**/.ipynb_checkpoints",
    # Raw benchmark outputs: performance.md names them as files; they are tables of
    # measurements, not pages.
    "results/benchmark_*.md",
    # Read by experiments/reproduce.py into results.md ("Reading the numbers"), where the
    # site shows it.
    "results/discussion.md",
]

# --- warnings: every broken reference fails the build -------------------------------
nitpicky = True
nitpick_ignore_regex = [
    # The types of the libraries uorojax builds on, as signatures name them (jax.Array,
    # numpy.ndarray, optax's GradientTransformation, flax's RNNCellBase, jax's Mesh): linked
    # through intersphinx when its inventories are reachable (UOROJAX_DOCS_INTERSPHINX=1),
    # and not resolvable by an offline build.
    (r"py:class", r"(jax|numpy|optax|flax)\..*"),
    # The standard library's typing.Any, collections.abc.Callable and Sequence, likewise.
    (r"py:(class|data)", r"(typing|collections\.abc)\..*"),
    # The ``...`` of a variadic tuple (``tuple[RecurrentKernel, ...]``), which
    # sphinx-autodoc-typehints links as the builtin constant Ellipsis.
    (r"py:data", r"Ellipsis"),
]
if os.environ.get("UOROJAX_DOCS_INTERSPHINX") == "1":
    # Off by default: the inventories are fetched over the network at build time.
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "jax": ("https://docs.jax.dev/en/latest", None),
        "optax": ("https://optax.readthedocs.io/en/latest", None),
        "flax": ("https://flax.readthedocs.io/en/latest", None),
    }

# --- autodoc ---------------------------------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
typehints_use_signature = True
typehints_use_signature_return = True
typehints_document_rtype = False
always_use_bars_union = True
python_use_unqualified_type_names = True

# --- MyST and the notebooks ------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = os.environ.get("UOROJAX_DOCS_EXECUTE", "cache")
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# --- HTML ------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"uorojax {release}"
html_static_path = []

# Signatures show the protocol's aliases by name, linked to their entries.
autodoc_type_aliases = {
    "ApplyFn": "uorojax.estimators.ApplyFn",
    "LossFn": "uorojax.estimators.LossFn",
}


# Inside a generic (``tuple[ApplyFn, LossFn]``, as_one_system's return) Sphinx prints the
# placeholder it substitutes for an alias by its repr, ``TypeAliasForwardRef('...')``: print
# the alias's name instead (a documented target, linked like the top-level ones).
sphinx.util.inspect.TypeAliasForwardRef.__repr__ = lambda self: self.name
