-- Account snapshots beside the ledger, outside its hash chain (docs/ledger.md, "Snapshots").
--
-- One row per (account stream, version): the core's state at that version as canonical JSON,
-- its SHA-256, the position and chain hash of the ledger record at that version, the `set_by`
-- references as canonical JSON, and when it was written (metadata, never read by a decision).
-- A cache of a fold, never evidence: every reader checks a row against the ledger before using
-- it (commands/snapshots.py), and `titan replay verify` proves each one equals the fold.
-- stored_events and the anchor are not touched.

CREATE TABLE public.titan_snapshots (
    stream_id text NOT NULL,
    version bigint NOT NULL CHECK (version >= 1),
    position bigint NOT NULL CHECK (position >= 1),
    chain_hash text NOT NULL,
    core_format text NOT NULL,
    state bytea NOT NULL,
    state_sha256 text NOT NULL,
    set_by bytea NOT NULL,
    created_ns bigint NOT NULL,
    PRIMARY KEY (stream_id, version)
);
-- The primary key serves "the newest at or before a version"; this one "at or before a position".
CREATE INDEX titan_snapshots_position_idx ON public.titan_snapshots (stream_id, position);
REVOKE ALL ON public.titan_snapshots FROM PUBLIC;

-- The writer role of adapters/postgres/sql/roles.sql, when it exists already: it reads and adds
-- snapshots and removes its old ones (a writer keeps its newest few), and can change none.
DO $$
DECLARE
    writer text := coalesce(nullif(current_setting('titan.writer_role', true), ''), 'titan_writer');
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = writer) THEN
        EXECUTE format('GRANT SELECT, INSERT, DELETE ON public.titan_snapshots TO %I', writer);
    END IF;
END
$$;
