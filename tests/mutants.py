"""Hand mutants of behaviours that once had no test: each is applied to the source, the
test that pins it is run (it must fail: the mutant is killed), and the file restored.

    .venv/bin/python tests/mutants.py
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

M = [  # (what the mutant breaks, file, original text, mutant text, the test that kills it)
    (
        "snap: the block range of the partial sums",
        "src/uorojax/estimators/sparse_influence.py",
        "    for start in range(0, num_streams, per_block):",
        "    for start in range(0, num_streams - 1, per_block):",
        "tests/test_family.py::test_the_history_partial_sums_cover_every_stream_once_in_blocks",
    ),
    (
        "snap: the certificate ignores the new state",
        "src/uorojax/estimators/sparse_influence.py",
        "finite & tree_finite(new_states))",
        "finite)",
        "tests/test_family.py::test_the_carry_certificate_reads_the_new_state",
    ),
    (
        "lru: the skip connection dropped",
        "src/uorojax/models/lru_stack.py",
        "        return carry, x + y\n",
        "        return carry, y\n",
        "tests/test_lru.py::test_the_stack_is_its_written_out_equations",
    ),
    (
        "copy curriculum fed nats, not bits",
        "src/uorojax/tasks/copy.py",
        "self.advance_curriculum(nats / math.log(2.0))",
        "self.advance_curriculum(nats)",
        "tests/test_tables.py::test_the_copy_curriculum_reads_the_recall_loss_in_bits",
    ),
    (
        "copy curriculum reports the length after advancing",
        "src/uorojax/tasks/copy.py",
        'return {"length": np.full(len(applied), float(length))}',
        'return {"length": np.full(len(applied), float(self.length))}',
        "tests/test_tables.py::test_the_copy_curriculum_reports_the_length_the_chunk_was_trained_at",
    ),
    (
        "trainer: pending gradients applied after a halt",
        "src/uorojax/training/update.py",
        "    accept = finite & ~halted\n",
        "    accept = finite\n",
        "tests/test_halt.py",
    ),
    (
        "registry.parse_method: values not read by type",
        "src/uorojax/estimators/registry.py",
        "values[name] = parse_value(name, text, declared[name].type)",
        "values[name] = text",
        "tests/test_registry.py::test_parse_method_reads_values_by_the_constructors_types",
    ),
    (
        "registry: a shared windowed estimator's example not repeated over streams",
        "src/uorojax/estimators/registry.py",
        'facts["example_x"] = repeat_streams(example_x, num_streams)',
        'facts["example_x"] = example_x',
        "tests/test_registry.py::test_a_shared_windowed_estimator_of_several_streams_is_the_batch_as_one_system",
    ),
    (
        "diagnostics.summarise: the mean over every step",
        "src/uorojax/analysis/diagnostics.py",
        "row[field] = float(np.mean(values[later]))",
        "row[field] = float(np.mean(values))",
        "tests/test_analysis.py",
    ),
]


def run_tests(*tests: str) -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True).returncode


def main() -> int:
    if run_tests(*sorted({m[-1] for m in M})):  # each test passes on the code as it is
        print("the tests fail without any mutant")
        return 1
    survived = 0
    for name, path, old, new, test in M:
        f = ROOT / path
        text = f.read_text()
        assert text.count(old) == 1, (name, text.count(old))
        f.write_text(text.replace(old, new))
        try:
            killed = run_tests(test) != 0
        finally:
            f.write_text(text)
        survived += not killed
        print(f"{'KILLED' if killed else 'SURVIVED'}: {name} ({path}) -> {test}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
