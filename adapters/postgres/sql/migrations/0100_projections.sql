-- 0100: the read models (projections/): positions, orders, decisions, commands, dlq, and the
-- tracking table that holds, per projection, the last ledger position it applied.
--
-- Each table mirrors the Table its projection module declares (projections/<name>.py); the
-- store refuses to run when they differ (`titan projections status` says which column). A later
-- change to a read model is a new file (0101_…), never an edit of this one. Read models are
-- derived from the ledger: a migration may drop and recreate a table, then
-- `titan projections rebuild NAME` refills it.
--
-- Types: text; bigint (integers, nanosecond times, ledger positions); numeric (exact decimals:
-- prices, quantities, money); boolean; jsonb.

CREATE TABLE IF NOT EXISTS rm_tracking (
    projection text PRIMARY KEY,
    position   bigint NOT NULL
);

-- positions: One row per account, venue and symbol with at least one fill.
CREATE TABLE IF NOT EXISTS rm_positions (
    account_id         text NOT NULL,
    venue              text NOT NULL,
    symbol             text NOT NULL,
    quantity           numeric NOT NULL,
    avg_price          numeric NOT NULL,
    cost               numeric NOT NULL,
    realized_pnl       numeric NOT NULL,
    fees               numeric NOT NULL,
    mark_price         numeric,
    last_fill_id       text NOT NULL,
    last_fill_ts_ns    bigint NOT NULL,
    last_fill_position bigint NOT NULL,
    PRIMARY KEY (account_id, venue, symbol)
);

-- orders: One row per order, accepted or refused.
CREATE TABLE IF NOT EXISTS rm_orders (
    order_id           text NOT NULL,
    account_id         text NOT NULL,
    command_id         text NOT NULL,
    client_order_id    text NOT NULL,
    venue              text NOT NULL,
    symbol             text NOT NULL,
    side               text NOT NULL,
    order_type         text NOT NULL,
    quantity           numeric NOT NULL,
    price              numeric,
    reference_price    numeric NOT NULL,
    reduce_only        boolean NOT NULL,
    phase_id           bigint,
    intent_id          text,
    notional           numeric,
    status             text NOT NULL,
    reason             text,
    filled_quantity    numeric NOT NULL,
    fill_count         bigint NOT NULL,
    venue_order_id     text,
    ack_latency_ms     bigint,
    cancel_requested   boolean NOT NULL,
    venue_reason       text,
    created_ts_ns      bigint NOT NULL,
    acknowledged_ts_ns bigint,
    closed_ts_ns       bigint,
    updated_ts_ns      bigint NOT NULL,
    created_position   bigint NOT NULL,
    updated_position   bigint NOT NULL,
    PRIMARY KEY (order_id)
);
CREATE INDEX IF NOT EXISTS rm_orders__account_id_status ON rm_orders (account_id, status);

-- decisions: One row per order decision (PlaceOrder, or each order a Flatten opens).
CREATE TABLE IF NOT EXISTS rm_decisions (
    order_id         text NOT NULL,
    command_id       text NOT NULL,
    account_id       text NOT NULL,
    command_type     text,
    outcome          text NOT NULL,
    reason           text,
    actor            text,
    phase_id         bigint,
    intent_id        text,
    correlation_id   text,
    causation_id     text,
    policy_hash      text,
    ts_ns            bigint NOT NULL,
    venue            text NOT NULL,
    symbol           text NOT NULL,
    side             text NOT NULL,
    checks           jsonb NOT NULL,
    event_position   bigint NOT NULL,
    event_positions  jsonb NOT NULL,
    event_types      jsonb NOT NULL,
    command_position bigint,
    PRIMARY KEY (order_id)
);
CREATE INDEX IF NOT EXISTS rm_decisions__command_id ON rm_decisions (command_id);

-- commands: One row per decided command.
CREATE TABLE IF NOT EXISTS rm_commands (
    command_id     text NOT NULL,
    command_type   text NOT NULL,
    account_id     text NOT NULL,
    outcome        text NOT NULL,
    reason         text,
    actor          text,
    correlation_id text,
    ts_ns          bigint NOT NULL,
    event_ids      jsonb NOT NULL,
    event_types    jsonb NOT NULL,
    position       bigint NOT NULL,
    PRIMARY KEY (command_id)
);
CREATE INDEX IF NOT EXISTS rm_commands__account_id_position ON rm_commands (account_id, position);

-- dlq: One row per dead-lettered message.
CREATE TABLE IF NOT EXISTS rm_dlq (
    entry_id         text NOT NULL,
    subject          text NOT NULL,
    headers          jsonb NOT NULL,
    payload          text NOT NULL,
    payload_encoding text NOT NULL,
    reason           text NOT NULL,
    error            text,
    delivery_count   bigint NOT NULL,
    first_seen_ns    bigint NOT NULL,
    last_seen_ns     bigint NOT NULL,
    account_id       text,
    command_id       text,
    status           text NOT NULL,
    PRIMARY KEY (entry_id)
);
CREATE INDEX IF NOT EXISTS rm_dlq__status_last_seen_ns ON rm_dlq (status, last_seen_ns);
