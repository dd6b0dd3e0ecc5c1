-- 0103: the DLQ view fed from TITAN_DLQ, and purges recorded in the ledger (issue 11).
--
-- rm_dlq is now kept by the DLQ feed from the TITAN_DLQ stream (its tracked position is the
-- stream's sequence, under the projection name `dlq_entries`); each row names the TITAN_CMD
-- sequence of the dead-lettered message. rm_dlq_purges is the ledger-fed `dlq` projection: one row
-- per entry purged by a recorded `purge_dlq.v1` operator action. Read models only: no ledger row
-- is touched. rm_dlq held no row before this release (nothing fed it), so the new column needs no
-- backfill; its default only covers that empty table.

ALTER TABLE rm_dlq ADD COLUMN IF NOT EXISTS stream_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE rm_dlq ALTER COLUMN stream_seq DROP DEFAULT;

CREATE TABLE IF NOT EXISTS rm_dlq_purges (
    entry_id   text NOT NULL,
    account_id text NOT NULL,
    actor      text NOT NULL,
    reason     text NOT NULL,
    position   bigint NOT NULL,
    ts_ns      bigint NOT NULL,
    command_id text NOT NULL,
    PRIMARY KEY (entry_id)
);
CREATE INDEX IF NOT EXISTS rm_dlq_purges__account_id_position ON rm_dlq_purges (account_id, position);
