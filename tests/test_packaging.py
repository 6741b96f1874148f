"""The package's shape: a light core import, and a public API that is what it says."""

import os
import subprocess
import sys

import uorojax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_EXTRA = ("ml_collections", "orbax", "tensorboardX", "tqdm", "matplotlib")


def test_importing_uorojax_does_not_load_the_run_infrastructure():
    code = (
        "import sys, uorojax\n"
        f"loaded = [m for m in {RUN_EXTRA!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "print('core only')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "core only" in result.stdout


def test_all_names_exist_and_are_documented():
    assert len(uorojax.__all__) == len(set(uorojax.__all__))
    for name in uorojax.__all__:
        obj = getattr(uorojax, name)
        assert obj.__doc__, name


def test_the_core_requirements_are_the_core_and_the_run_infrastructure_an_extra():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    core = {r.split(">")[0].split("=")[0].strip().lower() for r in project["dependencies"]}
    assert {"jax", "jaxlib", "flax", "optax", "chex"} <= core
    assert not core & {"ml_collections", "orbax-checkpoint", "tensorboardx", "tqdm", "matplotlib"}
    run = {r.split(">")[0].strip().lower() for r in project["optional-dependencies"]["run"]}
    assert {"ml_collections", "orbax-checkpoint", "tensorboardx", "tqdm", "matplotlib"} <= run


def test_ci_installs_exactly_the_lower_bounds():
    """`make setup` pins (constraints.txt) the versions pyproject.toml's lower bounds
    name, so the versions CI tests are the oldest a user can install."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    lower = dict(r.replace(" ", "").split(">=") for r in dependencies)
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        pins = dict(line.strip().split("==") for line in f if line.strip() and line[0] != "#")
    assert set(pins) == set(lower), (pins, lower)
    for name, version in pins.items():
        assert version.startswith(lower[name]), (name, version, lower[name])
