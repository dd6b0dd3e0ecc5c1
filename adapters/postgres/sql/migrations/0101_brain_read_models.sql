-- 0101: the Brain's read models (projections/truth.py, breaker.py, budget.py, venue_quality.py):
-- truth (latest per venue, and every snapshot), breaker (state, and every transition), budget
-- (per UTC day) and venue quality.
--
-- Each table mirrors the Table its projection module declares; the store refuses to run when
-- they differ. Read models are derived from the ledger: after `titan db upgrade`,
-- `titan projections run` (or `rebuild NAME`) fills them from position 0.
--
-- Types: text; bigint (integers, nanosecond times, ledger positions, money in 1e-8 units);
-- numeric (exact decimals); jsonb.

-- truth: One row per account and venue: its latest truth snapshot.
CREATE TABLE IF NOT EXISTS rm_truth (
    account_id        text NOT NULL,
    venue             text NOT NULL,
    score             bigint NOT NULL,
    components        jsonb NOT NULL,
    equity            numeric NOT NULL,
    venue_ts_ns       bigint NOT NULL,
    latency_ms        bigint NOT NULL,
    drifts            jsonb NOT NULL,
    orphan_order_ids  jsonb NOT NULL,
    missing_order_ids jsonb NOT NULL,
    ts_ns             bigint NOT NULL,
    position          bigint NOT NULL,
    PRIMARY KEY (account_id, venue)
);

-- truth: One row per truth snapshot.
CREATE TABLE IF NOT EXISTS rm_truth_history (
    position   bigint NOT NULL,
    account_id text NOT NULL,
    venue      text NOT NULL,
    score      bigint NOT NULL,
    components jsonb NOT NULL,
    equity     numeric NOT NULL,
    ts_ns      bigint NOT NULL,
    PRIMARY KEY (position)
);
CREATE INDEX IF NOT EXISTS rm_truth_history__account_id_venue_ts_ns ON rm_truth_history (account_id, venue, ts_ns);

-- breaker: One row per account whose breaker has ever moved: its current state.
CREATE TABLE IF NOT EXISTS rm_breaker (
    account_id  text NOT NULL,
    state       text NOT NULL,
    since_ts_ns bigint NOT NULL,
    trigger     text NOT NULL,
    reason      text NOT NULL,
    actor       text,
    position    bigint NOT NULL,
    PRIMARY KEY (account_id)
);

-- breaker: One row per breaker transition.
CREATE TABLE IF NOT EXISTS rm_breaker_transitions (
    position       bigint NOT NULL,
    account_id     text NOT NULL,
    from_state     text NOT NULL,
    to_state       text NOT NULL,
    trigger        text NOT NULL,
    reason         text NOT NULL,
    trigger_values jsonb NOT NULL,
    actor          text,
    ts_ns          bigint NOT NULL,
    PRIMARY KEY (position)
);
CREATE INDEX IF NOT EXISTS rm_breaker_transitions__account_id_ts_ns ON rm_breaker_transitions (account_id, ts_ns);

-- budget: One row per account and rolled UTC budget day.
CREATE TABLE IF NOT EXISTS rm_budget (
    account_id         text NOT NULL,
    day                bigint NOT NULL,
    date               text NOT NULL,
    pnl_money          bigint NOT NULL,
    realized_pnl_money bigint NOT NULL,
    fees_money         bigint NOT NULL,
    fills              bigint NOT NULL,
    opened_ts_ns       bigint NOT NULL,
    opened_position    bigint NOT NULL,
    closed_day_pnl     numeric,
    closed_ts_ns       bigint,
    closed_position    bigint,
    PRIMARY KEY (account_id, day)
);

-- venue_quality: One row per account and venue whose status has ever changed.
CREATE TABLE IF NOT EXISTS rm_venue_quality (
    account_id          text NOT NULL,
    venue               text NOT NULL,
    status              text NOT NULL,
    from_status         text NOT NULL,
    mean_slippage_bps   bigint NOT NULL,
    mean_ack_latency_ms bigint NOT NULL,
    samples             bigint NOT NULL,
    since_ts_ns         bigint NOT NULL,
    position            bigint NOT NULL,
    PRIMARY KEY (account_id, venue)
);
