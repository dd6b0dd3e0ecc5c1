-- 0102: read-model columns whose values a ledger may hold beyond 64 bits become numeric (issue 9).
--
-- A fill with a fee of 10^11 USDT is 10^19 money units, past bigint; a truth snapshot's
-- latency_ms and a venue's mean slippage come from the wire or from a price with no upper bound.
-- These columns are `big_integer` in their projection's Table (an exact integer of any size):
-- numeric here, decimal digits in SQLite. Values already stored convert exactly. Read models only:
-- no ledger row is touched.

ALTER TABLE rm_budget
    ALTER COLUMN pnl_money TYPE numeric,
    ALTER COLUMN realized_pnl_money TYPE numeric,
    ALTER COLUMN fees_money TYPE numeric;

ALTER TABLE rm_truth ALTER COLUMN latency_ms TYPE numeric;

ALTER TABLE rm_venue_quality ALTER COLUMN mean_slippage_bps TYPE numeric;
