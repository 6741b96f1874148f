"""What a compiled chunk does per step: kernels launched, FLOPs and bytes moved.

For a chunk compiled by the trainer (a ``lax.scan``: a ``while`` loop in XLA's optimized
HLO), :func:`analyse` walks one iteration of that loop: every instruction that is not
bookkeeping is a kernel (a fusion, a library call such as a matmul, a copy), nested loops
count as many times as they run (their known trip counts), and a conditional counts its
largest branch. For each kernel it adds the FLOPs of the matrix products inside it
(``2 · output size · contracted size``) and the bytes it reads and writes (its operands
and its output). XLA's own cost analysis counts a loop body once whatever its trip count,
which makes it undercount programs with inner loops (a TBPTT window); this walk does not.

These are the proxies to drive down on a machine without the accelerator whose timings
they stand for (launch count sets the time of small GPU steps; bytes the time of
per-stream tangent updates).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import NamedTuple

BOOKKEEPING = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "after-all"}

BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
         "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}  # fmt: skip

_COMPUTATION = re.compile(r"^(ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*?)\s([a-z][a-z0-9\-]*)\((.*)$")

_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")

_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


class Instruction(NamedTuple):
    name: str
    shape: str
    opcode: str
    rest: str


class Cost(NamedTuple):
    """Kernels by opcode, FLOPs and bytes accessed."""

    kernels: Counter
    flops: float
    bytes_accessed: float

    def __add__(self, other):
        return Cost(self.kernels + other.kernels, self.flops + other.flops,
                    self.bytes_accessed + other.bytes_accessed)  # fmt: skip

    def times(self, n: int) -> Cost:
        return Cost(Counter({k: v * n for k, v in self.kernels.items()}), self.flops * n,
                    self.bytes_accessed * n)  # fmt: skip


ZERO = Cost(Counter(), 0.0, 0.0)


def parse(text: str) -> dict[str, list[Instruction]]:
    """Computations of an HLO module's text, by name (the entry also as ``__entry__``)."""
    comps, name = {}, None
    for line in text.splitlines():
        match = _COMPUTATION.match(line)
        if match:
            name = match.group(2)
            comps[name] = []
            if match.group(1):
                comps["__entry__"] = comps[name]
        elif name is not None and line.strip() == "}":
            name = None
        elif name is not None:
            inst = _INSTRUCTION.match(line)
            if inst:
                comps[name].append(Instruction(*inst.groups()))
    return comps


def nbytes(shape: str) -> int:
    """Bytes of an HLO shape (a tuple's elements summed)."""
    return sum(
        BYTES.get(dtype, 4) * math.prod(int(d) for d in dims.split(",") if d)
        for dtype, dims in _ARRAY.findall(shape)
    )


def _dims(shape: str) -> list[int]:
    match = _ARRAY.search(shape)
    return [int(d) for d in match.group(2).split(",") if d] if match else []


def _operands(rest: str) -> list[str]:
    """The names of an instruction's operands (up to its closing parenthesis)."""
    depth = 1
    for end, ch in enumerate(rest):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return re.findall(r"%([\w.\-]+)", rest[:end])
    return re.findall(r"%([\w.\-]+)", rest)


def _attr(rest: str, key: str) -> str | None:
    match = re.search(rf"{key}=%?([\w.\-]+)", rest)
    return match.group(1) if match else None


def _dot_flops(inst: Instruction, shapes: dict[str, str]) -> float:
    lhs = _operands(inst.rest)[0]
    contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", inst.rest)
    lhs_dims = _dims(shapes.get(lhs, ""))
    size = (
        math.prod(lhs_dims[int(i)] for i in contracting.group(1).split(",") if i)
        if contracting
        else 1
    )
    return 2.0 * math.prod(_dims(inst.shape)) * size


def _instruction_flops(comps, inst: Instruction, shapes: dict[str, str]) -> float:
    """FLOPs of one instruction's matrix products, those of a fusion's body included."""
    flops = _dot_flops(inst, shapes) if inst.opcode in ("dot", "convolution") else 0.0
    called = _attr(inst.rest, "calls")
    return flops + (_inner_flops(comps, called) if called else 0.0)


def _inner_flops(comps, name: str) -> float:
    """FLOPs of the matrix products inside a fused computation."""
    shapes = {i.name: i.shape for i in comps.get(name, [])}
    return sum((_instruction_flops(comps, inst, shapes) for inst in comps.get(name, [])), 0.0)


_SLICES = {"slice", "dynamic-slice"}

_VIEWS = {"bitcast", "reshape"}


def _operand_bytes(comps, inst: Instruction, shapes: dict[str, str]) -> float:
    """Bytes an instruction reads from its operands: all of each operand, except that a
    fusion reading an operand only through slices (through bitcasts and reshapes) reads
    just those slices."""
    operands = _operands(inst.rest)
    sliced = (
        _sliced_parameter_bytes(comps, _attr(inst.rest, "calls")) if inst.opcode == "fusion" else {}
    )
    return sum(sliced.get(i, nbytes(shapes.get(o, ""))) for i, o in enumerate(operands))


def _sliced_parameter_bytes(comps, name: str | None) -> dict[int, int]:
    """For a fused computation, ``{parameter index: bytes of its slices}`` for the
    parameters used only through slices."""
    insts = comps.get(name or "", [])
    users: dict[str, list[Instruction]] = {}
    for inst in insts:
        for operand in _operands(inst.rest):
            users.setdefault(operand, []).append(inst)

    def sliced_bytes(value: str) -> int | None:
        total = 0
        for user in users.get(value, []):
            if user.opcode in _SLICES and _operands(user.rest)[0] == value:
                total += nbytes(user.shape)
            elif user.opcode in _VIEWS:
                inner = sliced_bytes(user.name)
                if inner is None:
                    return None
                total += inner
            else:
                return None
        return total if users.get(value) else None

    out = {}
    for inst in insts:
        if inst.opcode == "parameter":
            read = sliced_bytes(inst.name)
            if read is not None:
                out[int(inst.rest.split(")")[0])] = read
    return out


def cost(comps: dict[str, list[Instruction]], name: str) -> Cost:
    """Kernels, FLOPs and bytes of one run of a computation, loops expanded."""
    shapes = {i.name: i.shape for i in comps.get(name, [])}
    total = ZERO
    for inst in comps.get(name, []):
        if inst.opcode in BOOKKEEPING:
            continue
        if inst.opcode == "while":
            trip = _TRIP.search(inst.rest)
            total += cost(comps, _attr(inst.rest, "body")).times(int(trip.group(1)) if trip else 1)
        elif inst.opcode == "call":
            total += cost(comps, _attr(inst.rest, "to_apply"))
        elif inst.opcode == "conditional":
            branches = re.search(r"branch_computations=\{([^}]*)\}", inst.rest)
            names = [b.strip().lstrip("%") for b in branches.group(1).split(",")] if branches else [
                _attr(inst.rest, "true_computation"), _attr(inst.rest, "false_computation")]  # fmt: skip
            total += max(
                (cost(comps, n) for n in names if n),
                key=lambda c: c.flops + c.bytes_accessed,
                default=ZERO,
            )
        else:
            moved = nbytes(inst.shape) + _operand_bytes(comps, inst, shapes)
            flops = _instruction_flops(comps, inst, shapes)
            total += Cost(Counter({inst.opcode: 1}), flops, float(moved))
    return total


def analyse(compiled, iterations: int, unroll: int = 1) -> Cost:
    """Kernels, FLOPs and bytes of one iteration of a compiled chunk's main loop.

    Args:
      compiled: a compiled chunk (``jax.jit(...).lower(...).compile()``).
      iterations: the scan's length (steps, or windows, per chunk).
      unroll: the scan's unroll: XLA's loop then runs ``iterations / unroll`` times, each
        iteration doing ``unroll`` steps, and the cost is divided back to one.
    """
    comps = parse(compiled.as_text())
    trips = iterations // unroll
    loops = [
        inst
        for inst in comps.get("__entry__", [])
        if inst.opcode == "while" and (m := _TRIP.search(inst.rest)) and int(m.group(1)) == trips
    ]
    if not loops and trips <= 1:  # XLA removed a one-iteration loop: the whole program
        loops_cost = [cost(comps, "__entry__")]
    elif not loops:
        raise ValueError(
            f"no loop of {trips} iterations in the program's entry computation: pass the "
            "scan's length and unroll"
        )
    else:
        loops_cost = [cost(comps, _attr(inst.rest, "body")) for inst in loops]
    body = max(loops_cost, key=lambda c: sum(c.kernels.values()))
    return Cost(
        Counter({k: v / unroll for k, v in body.kernels.items()}),
        body.flops / unroll,
        body.bytes_accessed / unroll,
    )
