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


def test_the_readme_fits_a_page_opens_with_its_commands_and_links_to_existing_files():
    """The README opens with `make demo` and `make test`, fits on a page, and every
    relative link in it and in the site's pages names a file of the repository (so it
    works on GitHub and in the site alike)."""
    import glob
    import re

    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert readme.startswith("# uorojax\n\n```bash\n")
    assert [line.split("#")[0].strip() for line in block[:2]] == ["make demo", "make test"]
    assert len(readme.splitlines()) <= 150
    pages = [os.path.join(ROOT, "README.md")]
    pages += glob.glob(os.path.join(ROOT, "docs", "*.md"))
    pages += glob.glob(os.path.join(ROOT, "docs", "api", "*.md"))
    for page in pages:
        text = re.sub(r"```.*?```", "", open(page).read(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = os.path.join(os.path.dirname(page), target.split("#")[0])
            assert os.path.exists(path), (os.path.relpath(page, ROOT), target)


def test_every_table_row_of_the_readme_and_the_site_has_its_header_s_columns():
    """A `|` in a table cell, even inside code (`|Θ|`), ends the cell unless escaped
    (`\\|`): a row with more cells than its header loses the extra ones on GitHub and in
    the site."""
    import glob
    import re

    pages = [os.path.join(ROOT, "README.md")]
    pages += glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    for page in (p for p in pages if "_build" not in p):
        header, fenced = None, False
        for number, line in enumerate(open(page).read().splitlines(), 1):
            fenced ^= line.startswith("```")
            if fenced or not line.startswith("|"):
                header = None
                continue
            cells = len(re.split(r"(?<!\\)\|", line.strip().strip("|")))
            header = header or cells
            assert cells == header, (os.path.relpath(page, ROOT), number, line[:80])
