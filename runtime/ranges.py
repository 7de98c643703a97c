"""The values a numeric run setting may take, stated beside the setting and checked when it is
read (``runtime/config.py``): a setting out of its range is a located error naming the range,
never a ``TypeError`` or an allocation that cannot succeed later.

>>> str(Range(0, 1, hi_open=True)), str(COUNT), str(POSITIVE)
('in [0, 1)', 'from 1 to 2147483647', 'greater than 0')
>>> Range(1).violation(0)
'at least 1'
>>> COUNT.violation(2**40)
'at most 2147483647'
"""

from __future__ import annotations

from dataclasses import dataclass

INT32_MAX = 2**31 - 1  # step counters and sizes are int32 on the device
SEED_MAX = 2**32 - 1  # jax.random.key keeps 32 bits of a seed: larger ones repeat smaller ones
FLOAT32_MAX = 3.4028234663852886e38  # settings enter float32 computations


@dataclass(frozen=True, slots=True)
class Range:
    """``lo ≤ x ≤ hi`` (``<`` where the end is open); ``None``: unbounded on that side.
    ``why``: what the setting means, said in the hint when a value falls outside."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def violation(self, x) -> str | None:
        """The bound ``x`` breaks, in words (``'at least 1'``), or None when it is inside."""
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return f"{'greater than' if self.lo_open else 'at least'} {_num(self.lo)}"
        if self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi):
            return f"{'less than' if self.hi_open else 'at most'} {_num(self.hi)}"
        return None

    def __str__(self) -> str:
        return self.describe(integer=isinstance(self.lo, int) and isinstance(self.hi, int))

    def describe(self, integer: bool) -> str:
        """The range in words: ``from 1 to 10`` for integers, ``in [0, 1)`` for numbers."""
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            if integer and not (self.lo_open or self.hi_open):
                return f"from {lo} to {hi}"
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"in {left}{_num(lo)}, {_num(hi)}{right}"
        if lo is not None:
            return f"{'greater than' if self.lo_open else 'at least'} {_num(lo)}"
        if hi is not None:
            return f"{'less than' if self.hi_open else 'at most'} {_num(hi)}"
        return "any finite number"


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


# the ranges most settings share
COUNT = Range(1, INT32_MAX)  # steps, sizes, numbers of samples
EVERY = Range(0, INT32_MAX, why="0 turns it off")  # a period in steps
SEED = Range(0, SEED_MAX)
POSITIVE = Range(0, lo_open=True)
NONNEGATIVE = Range(0)
PROBABILITY = Range(0, 1)
DECAY = Range(0, 1, hi_open=True)  # a moving average's decay: 1 would never move
CORRELATION = Range(-1, 1)
ANY = Range()
