"""The Brain's parts of a policy: truth score, breaker, venue quality, allocation, tail risk, budget.

Each section is optional. A policy without a section leaves that part of the Brain off, so a
ledger written before the Brain existed replays to the very same events.
"""

from __future__ import annotations

from typing import Final

from .numbers import MONEY_DECIMALS, is_decimal, parse_units

RATIO_DECIMALS: Final = 4
"""Leverage and tail exponents are integers of 1e-4 (10x leverage = 100_000)."""

NORMAL: Final = "NORMAL"
DEFENSIVE: Final = "DEFENSIVE"
HALTED: Final = "HALTED"
BREAKER_LEVELS: Final = (NORMAL, DEFENSIVE, HALTED)

REGIMES: Final = ("RISK_ON", "NEUTRAL", "RISK_OFF", "CRASH")


class RiskPolicyError(Exception):
    """A Brain section that cannot be read."""


def _get(doc: dict[str, object], key: str) -> object:
    if key not in doc:
        raise RiskPolicyError(f"policy field {key!r} is missing")
    return doc[key]


def _int(doc: dict[str, object], key: str) -> int:
    value = _get(doc, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RiskPolicyError(f"policy field {key!r} must be a non-negative integer")
    return value


def _units(doc: dict[str, object], key: str, decimals: int) -> int:
    value = _get(doc, key)
    if not isinstance(value, str) or not is_decimal(value) or value.startswith("-"):
        raise RiskPolicyError(f"policy field {key!r} must be a non-negative decimal string")
    parsed = parse_units(value, decimals)
    if not parsed.ok:
        raise RiskPolicyError(f"policy field {key!r} has more than {decimals} decimals")
    return parsed.units


def _level(doc: dict[str, object], key: str) -> str:
    value = _get(doc, key)
    if value != DEFENSIVE and value != HALTED:
        raise RiskPolicyError(f"policy field {key!r} must be DEFENSIVE or HALTED")
    return str(value)


def _phases(doc: dict[str, object], key: str) -> tuple[int, ...]:
    value = _get(doc, key)
    if not isinstance(value, list):
        raise RiskPolicyError(f"policy field {key!r} must be a list of phase ids")
    phases: list[int] = []
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or item < 1 or item > 3:
            raise RiskPolicyError(f"policy field {key!r} holds {item!r}, not a phase id 1..3")
        phases.append(item)
    return tuple(sorted(phases))


def _section(doc: dict[str, object], key: str) -> dict[str, object] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RiskPolicyError(f"policy section {key!r} must be an object")
    return value


class TruthPolicy:
    """Weights and thresholds of the truth score (docs/risk.md)."""

    def __init__(self, doc: dict[str, object]) -> None:
        weights = _section(doc, "weights")
        if weights is None:
            raise RiskPolicyError("truth.weights is missing")
        self.w_drift: Final = _int(weights, "position_drift")
        self.w_orphan: Final = _int(weights, "orphan_orders")
        self.w_missing: Final = _int(weights, "missing_orders")
        self.w_staleness: Final = _int(weights, "staleness")
        self.w_latency: Final = _int(weights, "latency")
        if self.w_drift + self.w_orphan + self.w_missing + self.w_staleness + self.w_latency <= 0:
            raise RiskPolicyError("truth.weights must not all be zero")
        self.drift_tolerance_money: Final = _units(doc, "drift_tolerance", MONEY_DECIMALS)
        self.penalty_per_order: Final = _int(doc, "penalty_per_order")
        self.missing_order_grace_ms: Final = _int(doc, "missing_order_grace_ms")
        self.snapshot_max_age_ms: Final = _int(doc, "snapshot_max_age_ms")
        self.latency_limit_ms: Final = _int(doc, "latency_limit_ms")
        self.stale_after_ms: Final = _int(doc, "stale_after_ms")
        self.min_score_for_new_risk: Final = _int(doc, "min_score_for_new_risk")
        self.defensive_below: Final = _int(doc, "defensive_below")
        self.halt_below: Final = _int(doc, "halt_below")


class BreakerPolicy:
    """How the breaker scales risk and recovers."""

    def __init__(self, doc: dict[str, object]) -> None:
        self.defensive_factor_bps: Final = _int(doc, "defensive_factor_bps")
        self.recovery_ms: Final = _int(doc, "recovery_ms")


class VenueQualityPolicy:
    """Rolling windows of slippage and ack latency, and the thresholds that degrade or halt a venue."""

    def __init__(self, doc: dict[str, object]) -> None:
        self.window: Final = max(1, _int(doc, "window"))
        self.window_ms: Final = _int(doc, "window_ms")
        self.degraded_slippage_bps: Final = _int(doc, "degraded_slippage_bps")
        self.halted_slippage_bps: Final = _int(doc, "halted_slippage_bps")
        self.degraded_latency_ms: Final = _int(doc, "degraded_latency_ms")
        self.halted_latency_ms: Final = _int(doc, "halted_latency_ms")
        self.degraded_factor_bps: Final = _int(doc, "degraded_factor_bps")


class Band:
    """An equity band: from `min_equity` up, these phases with this leverage cap."""

    def __init__(self, doc: dict[str, object]) -> None:
        self.min_equity_money: Final = _units(doc, "min_equity", MONEY_DECIMALS)
        self.phases: Final = _phases(doc, "phases")
        self.max_leverage: Final = _units(doc, "max_leverage", RATIO_DECIMALS)


class RegimeRule:
    """What a market regime allows: phases, and a leverage factor."""

    def __init__(self, name: str, doc: dict[str, object]) -> None:
        self.name: Final = name
        self.phases: Final = _phases(doc, "phases")
        self.leverage_factor_bps: Final = _int(doc, "leverage_factor_bps")


class AllocationPolicy:
    """Equity bands (ascending) and regime rules."""

    def __init__(self, doc: dict[str, object]) -> None:
        raw_bands = _get(doc, "bands")
        if not isinstance(raw_bands, list) or not raw_bands:
            raise RiskPolicyError("allocation.bands must be a non-empty list")
        bands: list[Band] = []
        for raw in raw_bands:
            if not isinstance(raw, dict):
                raise RiskPolicyError("each allocation band must be an object")
            bands.append(Band(raw))
        for i in range(1, len(bands)):
            if bands[i].min_equity_money <= bands[i - 1].min_equity_money:
                raise RiskPolicyError("allocation.bands must ascend by min_equity")
        self.bands: Final = bands
        regimes = _section(doc, "regimes")
        if regimes is None:
            raise RiskPolicyError("allocation.regimes is missing")
        rules: dict[str, RegimeRule] = {}
        for name in REGIMES:
            raw_rule = _section(regimes, name)
            if raw_rule is None:
                raise RiskPolicyError(f"allocation.regimes.{name} is missing")
            rules[name] = RegimeRule(name, raw_rule)
        self.regimes: Final = rules
        self.initial_equity_money: Final = _units(doc, "initial_equity", MONEY_DECIMALS)

    def band_for(self, equity_money: int) -> Band:
        """The highest band whose minimum the equity reaches (the lowest band below all)."""
        chosen = self.bands[0]
        for band in self.bands:
            if equity_money >= band.min_equity_money:
                chosen = band
        return chosen


class TailPolicy:
    """The minimum power-law tail exponent before the breaker turns DEFENSIVE."""

    def __init__(self, doc: dict[str, object]) -> None:
        self.min_tail_exponent: Final = _units(doc, "min_tail_exponent", RATIO_DECIMALS)


class BudgetPolicy:
    """The daily realized-loss limit and the maximum drawdown from peak equity."""

    def __init__(self, doc: dict[str, object]) -> None:
        self.daily_loss_limit_money: Final = _units(doc, "daily_loss_limit", MONEY_DECIMALS)
        self.max_drawdown_bps: Final = _int(doc, "max_drawdown_bps")
        self.daily_loss_breaker: Final = _level(doc, "daily_loss_breaker")
        self.drawdown_breaker: Final = _level(doc, "drawdown_breaker")


class RiskPolicy:
    """The Brain's sections of a policy; each None when the document leaves it out."""

    def __init__(
        self,
        truth: TruthPolicy | None,
        breaker: BreakerPolicy | None,
        venue_quality: VenueQualityPolicy | None,
        allocation: AllocationPolicy | None,
        tail: TailPolicy | None,
        budget: BudgetPolicy | None,
    ) -> None:
        self.truth: Final = truth
        self.breaker: Final = breaker
        self.venue_quality: Final = venue_quality
        self.allocation: Final = allocation
        self.tail: Final = tail
        self.budget: Final = budget

    def any(self) -> bool:
        """Whether any part of the Brain is on."""
        return (
            self.truth is not None
            or self.breaker is not None
            or self.venue_quality is not None
            or self.allocation is not None
            or self.tail is not None
            or self.budget is not None
        )


def risk_policy_from_document(doc: dict[str, object]) -> RiskPolicy:
    """Read the Brain's sections of a policy document; raise RiskPolicyError."""
    truth = _section(doc, "truth")
    breaker = _section(doc, "breaker")
    venue = _section(doc, "venue_quality")
    allocation = _section(doc, "allocation")
    tail = _section(doc, "tail_risk")
    budget = _section(doc, "budget")
    return RiskPolicy(
        TruthPolicy(truth) if truth is not None else None,
        BreakerPolicy(breaker) if breaker is not None else None,
        VenueQualityPolicy(venue) if venue is not None else None,
        AllocationPolicy(allocation) if allocation is not None else None,
        TailPolicy(tail) if tail is not None else None,
        BudgetPolicy(budget) if budget is not None else None,
    )
