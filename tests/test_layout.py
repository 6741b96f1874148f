"""The package's layout: the public API of every release keeps working, the layers import
downwards only (no import cycle), and every module stays small."""

import ast
import os
import subprocess
import sys

import pytest

import uorojax
from uorojax.models.inference.layers import strongly_connected

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
PACKAGE = os.path.join(SRC, "uorojax")

# Every name of ``uorojax.__all__`` as of 0.1.0, before the packages: each keeps working.
PUBLIC_0_1_0 = (
    "ConfigError EPropState ESDRTRLState ElementwiseMGUCell Estimator KFRTRLState LRUCell "
    "Model ModelError NonFiniteError OKState OnlineGradientState RTRLState SnApState StepInfo "
    "TrainState Trainer UOROState WindowState as_one_system as_optax carry_stream_axes "
    "diagnostics eprop es_d_rtrl estimators forward_sequence from_equinox from_linen_cells "
    "from_nnx gradient_agreement jacobian_matrix kf_rtrl leaky_rnn linen_model lru_stack "
    "make_trainer ok paper_schedule per_stream pullback_and_norm ravel_params registry rflo "
    "rtrl run_window shard_chunk shard_train_state snap1 softmax_cross_entropy squared_error "
    "step_key stream_mesh structure tangent_outer tanh_rnn tasks tbptt tree tree_norm "
    "tree_vdot uoro uoro_rescale"
).split()

# Names of the modules that used to hang off ``uorojax`` and the attributes users call.
MODULE_ATTRIBUTES = {
    "structure": ("Structure", "Units", "Feedforward", "check_structure"),
    "registry": ("ESTIMATORS", "build_estimator", "hyperparameters", "parse_method"),
    "diagnostics": ("gradient_statistics", "summarise"),
    "tasks": ("Copy", "AnBn", "make_stream", "IGNORE_LABEL"),
    "distributed": ("initialize", "is_writer", "launch_local"),
}


@pytest.mark.parametrize("name", PUBLIC_0_1_0)
def test_every_public_name_of_0_1_0_keeps_working(name):
    assert name in uorojax.__all__
    assert getattr(uorojax, name) is not None


@pytest.mark.parametrize("module", sorted(MODULE_ATTRIBUTES))
def test_modules_reachable_from_import_uorojax_keep_their_names(module):
    for attribute in MODULE_ATTRIBUTES[module]:
        assert callable(getattr(getattr(uorojax, module), attribute)) or attribute.isupper()


def test_distributed_works_after_import_uorojax_alone():
    code = "import uorojax\nprint(uorojax.distributed.is_writer())\n"
    env = {**os.environ, "PYTHONPATH": SRC}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"


# ----------------------------------------------------------------------------- imports


def module_files() -> dict[str, str]:
    """Dotted module name -> path, for every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imported_modules(path: str, modules: dict[str, str]) -> set[str]:
    """The package's modules a file imports, anywhere in it (deferred imports count):
    ``from a.b import c`` reaches the module ``a.b.c`` if there is one, else ``a.b``."""
    reached = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            reached |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if child in modules:
                    reached.add(child)
                elif node.module in modules:
                    reached.add(node.module)
    return reached


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module of an import graph
    (``graph[m]``: the modules ``m`` imports), by the library's own Tarjan
    (:func:`uorojax.models.inference.layers.strongly_connected`, which takes, for every
    node, the nodes it reads)."""
    names = sorted(graph)
    index = {m: i for i, m in enumerate(names)}
    components = strongly_connected([{index[d] for d in graph[m]} for m in names])
    return [[names[i] for i in c] for c in components if len(c) > 1]


def test_there_is_no_import_cycle():
    modules = module_files()
    graph = {m: imported_modules(p, modules) - {m} for m, p in modules.items()}
    cycles = import_cycles(graph)
    assert not cycles, cycles


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_estimator_imports_another():
    """Estimators share pieces through the protocol and helper modules, never sideways."""
    modules = module_files()
    estimators = {
        m
        for m in modules
        if m.startswith("uorojax.estimators.")
        and m.rsplit(".", 1)[1]
        in (
            "uoro",
            "rtrl",
            "tbptt",
            "kf_rtrl",
            "ok",
            "snap",
            "eprop",
            "rflo",
            "es_d_rtrl",
        )  # fmt: skip
    }
    for m in sorted(estimators):
        sideways = imported_modules(modules[m], modules) & estimators
        assert not sideways, (m, sideways)


def test_every_module_stays_small_and_the_reproduction_is_data():
    """No module of the package is over 400 lines; ``experiments/reproduce.py`` (runs as
    data, analyses through the library) is at most 300."""
    long = {m: n for m, p in module_files().items() if (n := len(open(p).readlines())) > 400}
    assert not long, long
    reproduce = os.path.join(ROOT, "experiments", "reproduce.py")
    assert len(open(reproduce).readlines()) <= 300
