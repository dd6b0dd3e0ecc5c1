"""The Hill estimator against distributions whose tail exponent is known."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from adapters.paper.hill import HillError, default_k, hill_exponent, quantized


def pareto(alpha: float, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    # inverse transform: X = U^(-1/alpha) has P(X > x) = x^-alpha; random signs as for returns
    return [repr((1.0 - rng.random()) ** (-1.0 / alpha) * rng.choice((1, -1))) for _ in range(n)]


@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0, 4.0])
def test_recovers_the_exponent_of_a_pareto_tail(alpha: float) -> None:
    sample = pareto(alpha, 20_000, seed=11)
    estimate = hill_exponent(sample, 400)
    assert abs(estimate - Decimal(str(alpha))) < Decimal(str(alpha)) * Decimal("0.12")


def test_student_t_with_three_degrees_of_freedom_has_tail_exponent_near_three() -> None:
    rng = random.Random(5)
    sample = []
    for _ in range(40_000):
        z = rng.gauss(0.0, 1.0)
        chi2 = sum(rng.gauss(0.0, 1.0) ** 2 for _ in range(3))
        sample.append(repr(z / (chi2 / 3) ** 0.5))
    estimate = hill_exponent(sample, 300)
    assert Decimal("2.3") < estimate < Decimal("3.7")


def test_a_thin_tail_gives_a_large_exponent() -> None:
    rng = random.Random(3)
    sample = [repr(rng.gauss(0.0, 1.0)) for _ in range(20_000)]
    assert hill_exponent(sample, 200) > Decimal(4)


def test_is_deterministic_and_order_free() -> None:
    sample = pareto(2.5, 5_000, seed=2)
    first = hill_exponent(sample, default_k(len(sample)))
    assert hill_exponent(list(reversed(sample)), default_k(len(sample))) == first
    assert quantized(first) == quantized(hill_exponent(sorted(sample), default_k(5_000)))
    assert len(quantized(first).split(".")[1]) == 4


def test_exact_on_a_hand_computed_sample() -> None:
    # magnitudes 8, 4, 2, 1 with k=2: threshold 2; ln(8/2) + ln(4/2) = 3 ln 2; alpha = 2 / (3 ln 2)
    estimate = hill_exponent(["8", "-4", "2", "1"], 2)
    assert quantized(estimate) == "0.9618"


def test_refuses_samples_that_cannot_support_an_estimate() -> None:
    with pytest.raises(HillError):
        hill_exponent(["1", "2"], 2)
    with pytest.raises(HillError):
        hill_exponent(["1", "2", "3"], 1)
    with pytest.raises(HillError):
        hill_exponent(["5", "5", "5", "1"], 2)
