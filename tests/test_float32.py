"""The core in float32, without global x64: dtypes stay float32 and results agree with
the float64 ones to float32 precision (a subprocess, since x64 is process-wide)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# x64 off in the subprocesses (tests/conftest.py reads UOROJAX_TEST_X64).
ENV = {**os.environ, "UOROJAX_TEST_X64": "0", "PYTHONPATH": os.path.join(ROOT, "src")}


def test_the_protocol_subset_passes_without_x64():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "ignore::UserWarning", "tests/test_protocol.py",
         "-k", "test_init_and_step_contract and with_jit"],
        cwd=ROOT, env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout[-2000:]


def test_every_estimator_trains_in_float32_without_x64():
    checks = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "float32_checks.py")],
        cwd=ROOT, env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert checks.returncode == 0, checks.stderr[-3000:]
    assert "float32 ok" in checks.stdout
