"""The Hill estimator of a power-law tail exponent, in exact decimal arithmetic.

This is the "power-law lab" side of tail risk: it turns recent returns into the estimate that a
`RecordTailRisk` command carries. It lives outside the compiled decider, and it is deterministic:
`decimal` computes `ln` correctly rounded at a fixed precision, so the same returns give the same
digits on every machine.

For the k largest absolute returns X(1) >= ... >= X(k) and the next one X(k+1):

    alpha = k / sum_{i=1..k} ln(X(i) / X(k+1))

A smaller alpha means a fatter tail (alpha < 2: infinite variance).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Context, Decimal

PRECISION = 34
EXPONENT_QUANTUM = Decimal("0.0001")  # what RecordTailRisk carries: 4 decimals


class HillError(ValueError):
    """The sample cannot support an estimate (too small, or k out of range)."""


def hill_exponent(returns: Iterable[Decimal | str | int], k: int) -> Decimal:
    """The Hill estimate of the tail exponent from the k largest absolute returns."""
    context = Context(prec=PRECISION, rounding=ROUND_HALF_EVEN)
    magnitudes = sorted((abs(Decimal(r)) for r in returns), reverse=True)
    magnitudes = [m for m in magnitudes if m != 0]
    if k < 2:
        raise HillError(f"k must be at least 2, got {k}")
    if len(magnitudes) <= k:
        raise HillError(f"need more than k={k} non-zero returns, got {len(magnitudes)}")
    threshold = magnitudes[k]
    total = Decimal(0)
    for magnitude in magnitudes[:k]:
        total = context.add(total, context.ln(context.divide(magnitude, threshold)))
    if total == 0:
        raise HillError("the k largest returns are all equal: no tail to measure")
    return context.divide(Decimal(k), total)


def default_k(n: int) -> int:
    """A common choice of k: about the square root of the sample size (at least 2)."""
    root = Decimal(n).sqrt(Context(prec=PRECISION))
    return max(2, int(root))


def quantized(exponent: Decimal) -> str:
    """The estimate as RecordTailRisk carries it: 4 decimals, half-even."""
    return str(exponent.quantize(EXPONENT_QUANTUM, rounding=ROUND_HALF_EVEN))
