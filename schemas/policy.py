"""The risk-policy document (SPEC §3). Its hash is SHA-256 of its canonical JSON."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from .base import (
    MAX_DURATION_MS,
    Count,
    Identifier,
    Milliseconds,
    PositiveDecimal,
    Text,
    WireModel,
    at_most,
    items_at_most,
)
from .canonical import document_hash

MONEY_DECIMALS = 8
MAX_INSTRUMENTS: Final = 1000
MAX_BANDS: Final = 100
MAX_OPEN_ORDERS: Final = 5000
"""Open orders a policy may allow, and a venue snapshot may list."""


def _decimals(text: str) -> int:
    point = text.find(".")
    return 0 if point < 0 else len(text[point + 1 :].rstrip("0"))


def _is_zero(text: str) -> bool:
    return text.replace(".", "").strip("0") == ""


class InstrumentSpec(WireModel):
    """A tradable symbol on a venue, its price tick, quantity step and per-symbol limits."""

    venue: Identifier
    symbol: Identifier
    tick_size: PositiveDecimal
    step_size: PositiveDecimal
    max_order_qty: PositiveDecimal
    max_position_notional: PositiveDecimal

    @model_validator(mode="after")
    def _scales_fit(self) -> InstrumentSpec:
        if _decimals(self.tick_size) + _decimals(self.step_size) > MONEY_DECIMALS:
            raise ValueError(
                f"tick_size and step_size together have more than {MONEY_DECIMALS} decimals"
            )
        if _is_zero(self.tick_size) or _is_zero(self.step_size):
            raise ValueError("tick_size and step_size must be positive")
        if _decimals(self.max_order_qty) > _decimals(self.step_size):
            raise ValueError("max_order_qty is finer than step_size")
        if _decimals(self.max_position_notional) > MONEY_DECIMALS:
            raise ValueError(f"max_position_notional has more than {MONEY_DECIMALS} decimals")
        return self


class Limits(WireModel):
    """Account-wide limits; money in the quote currency, as decimal strings."""

    max_order_notional: PositiveDecimal
    price_collar_bps: Count
    max_gross_exposure: PositiveDecimal
    max_orders_per_second: Count
    max_messages_per_second: Count
    max_open_orders: Annotated[int, Field(ge=0), at_most(MAX_OPEN_ORDERS)]


Bps = Annotated[int, Field(ge=0, le=10_000)]
Score = Annotated[int, Field(ge=0, le=100)]
PhaseList = Annotated[list[Annotated[int, Field(ge=1, le=3)]], Field(max_length=3)]
Level = Literal["DEFENSIVE", "HALTED"]


class TruthWeights(WireModel):
    """Weights of the truth score's components (any non-negative integers, not all zero)."""

    position_drift: Count
    orphan_orders: Count
    missing_orders: Count
    staleness: Count
    latency: Count


class TruthSection(WireModel):
    """How the truth score is computed and what it gates (docs/risk.md)."""

    weights: TruthWeights
    drift_tolerance: Annotated[PositiveDecimal, Field(description="position drift (quote currency) that scores 0")]
    penalty_per_order: Score
    missing_order_grace_ms: Milliseconds
    snapshot_max_age_ms: Milliseconds
    latency_limit_ms: Milliseconds
    stale_after_ms: Milliseconds
    min_score_for_new_risk: Score
    defensive_below: Score
    halt_below: Score

    @model_validator(mode="after")
    def _ordered(self) -> TruthSection:
        w = self.weights
        if w.position_drift + w.orphan_orders + w.missing_orders + w.staleness + w.latency == 0:
            raise ValueError("truth.weights must not all be zero")
        if self.halt_below > self.defensive_below:
            raise ValueError("truth.halt_below must not exceed truth.defensive_below")
        return self


class BreakerSection(WireModel):
    """How DEFENSIVE scales risk, and how long every trigger must stay clear to leave it."""

    defensive_factor_bps: Bps
    recovery_ms: Milliseconds


class VenueQualitySection(WireModel):
    """Rolling windows of ack latency and slippage per venue, and their thresholds."""

    window: Annotated[int, Field(ge=1, le=10_000, description="at most this many samples")]
    window_ms: Annotated[
        int,
        Field(ge=1, description="samples older than this (command time) no longer count"),
        at_most(MAX_DURATION_MS, " (366 days)"),
    ]
    degraded_slippage_bps: Count
    halted_slippage_bps: Count
    degraded_latency_ms: Milliseconds
    halted_latency_ms: Milliseconds
    degraded_factor_bps: Bps

    @model_validator(mode="after")
    def _ordered(self) -> VenueQualitySection:
        if self.degraded_slippage_bps > self.halted_slippage_bps or self.degraded_latency_ms > self.halted_latency_ms:
            raise ValueError("venue_quality: degraded thresholds must not exceed halted ones")
        return self


class Band(WireModel):
    """From `min_equity` up: the phases allowed and their leverage cap."""

    min_equity: PositiveDecimal
    phases: PhaseList
    max_leverage: PositiveDecimal


class RegimeRule(WireModel):
    """What a regime allows: phases, and a factor on the leverage cap."""

    phases: PhaseList
    leverage_factor_bps: Bps


class Regimes(WireModel):
    RISK_ON: RegimeRule
    NEUTRAL: RegimeRule
    RISK_OFF: RegimeRule
    CRASH: RegimeRule


class AllocationSection(WireModel):
    """Equity bands (ascending) and regime rules; equity starts at `initial_equity`."""

    initial_equity: PositiveDecimal
    bands: Annotated[list[Band], Field(min_length=1), items_at_most(MAX_BANDS)]
    regimes: Regimes

    @model_validator(mode="after")
    def _ascending(self) -> AllocationSection:
        for lower, upper in zip(self.bands, self.bands[1:], strict=False):
            if _as_key(upper.min_equity) <= _as_key(lower.min_equity):
                raise ValueError("allocation.bands must ascend by min_equity")
        return self


def _as_key(text: str) -> tuple[int, str]:
    whole, _, fraction = text.partition(".")
    return int(whole), fraction.rstrip("0").ljust(MONEY_DECIMALS, "0")


class TailRiskSection(WireModel):
    """The minimum power-law tail exponent before the breaker turns DEFENSIVE."""

    min_tail_exponent: PositiveDecimal


class BudgetSection(WireModel):
    """Daily realized-loss limit, maximum drawdown, and the breaker level each one trips."""

    daily_loss_limit: PositiveDecimal
    max_drawdown_bps: Bps
    daily_loss_breaker: Level = "HALTED"
    drawdown_breaker: Level = "DEFENSIVE"


SECTIONS = ("truth", "breaker", "venue_quality", "allocation", "tail_risk", "budget", "rules_version")
"""Optional parts that are left out of the canonical JSON when absent, so older policies keep their hash."""


class PolicyDocument(WireModel):
    """A complete risk policy; exactly one is active per account.

    The Brain's sections are optional: a policy without one leaves that part off, and a section
    left out is left out of the canonical JSON too, so a policy written before the Brain keeps its
    hash and its ledgers replay unchanged.
    """

    policy_id: Identifier
    description: Text = ""
    quote_currency: Identifier = "USDT"
    instruments: Annotated[list[InstrumentSpec], Field(min_length=1), items_at_most(MAX_INSTRUMENTS)]
    limits: Limits
    truth: TruthSection | None = None
    breaker: BreakerSection | None = None
    venue_quality: VenueQualitySection | None = None
    allocation: AllocationSection | None = None
    tail_risk: TailRiskSection | None = None
    budget: BudgetSection | None = None
    rules_version: Annotated[
        int | None,
        Field(
            ge=1,
            le=2,
            description="the decider rules this policy is decided under (docs/decisions.md); absent = 1",
        ),
    ] = None

    @model_serializer(mode="wrap")
    def _without_absent_sections(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for section in SECTIONS:
            if data.get(section) is None:
                data.pop(section, None)
        return data

    @model_validator(mode="after")
    def _unique_instruments(self) -> PolicyDocument:
        seen: set[str] = set()
        for instrument in self.instruments:
            key = f"{instrument.venue}:{instrument.symbol}"
            if key in seen:
                raise ValueError(f"instrument {key} is listed twice")
            seen.add(key)
        return self


def policy_hash(policy: PolicyDocument) -> str:
    """SHA-256 of the policy's canonical JSON, defaults included (what `titan policy hash` prints)."""
    return document_hash(policy.model_dump(mode="json"))
