-- The ledger's tables (titan-ledger/1).
--
-- stored_events, its index and its composite type are eventsourcing 9.5's
-- PostgresApplicationRecorder DDL with ORIGINATOR_ID_TYPE=text, copied verbatim (schema "public",
-- table "stored_events"), so that eventsourcing's own recorder reads a titan ledger. Left out on
-- purpose: its es_insert_events_text() function, which inserts without the table lock (see
-- docs/postgres.md). titan_meta and titan_chain_head are the same as in the embedded ledger.

CREATE TABLE IF NOT EXISTS "public"."stored_events" (originator_id "text" NOT NULL, originator_version bigint NOT NULL, topic text, state bytea, notification_id bigserial, PRIMARY KEY (originator_id, originator_version)) WITH (    autovacuum_enabled = true,    autovacuum_vacuum_threshold = 100000000,    autovacuum_vacuum_scale_factor = 0.5,    autovacuum_analyze_threshold = 1000,    autovacuum_analyze_scale_factor = 0.01);

CREATE TYPE "public"."stored_event_text" AS (originator_id "text", originator_version bigint, topic text, state bytea);

CREATE UNIQUE INDEX IF NOT EXISTS "stored_events_notification_id_idx" ON "public"."stored_events" (notification_id ASC);

CREATE TABLE public.titan_meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO public.titan_meta (key, value) VALUES ('format', 'titan-ledger/1');

-- The anchor: the last position, its chain hash and the record count, moved by every append in
-- the same transaction as its records.
CREATE TABLE public.titan_chain_head (
    id integer PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL,
    hash text NOT NULL,
    record_count bigint NOT NULL
);
INSERT INTO public.titan_chain_head (id, position, hash, record_count)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);

-- eventsourcing's ordering protocol: every append transaction takes this lock before its insert,
-- so positions (notification ids) are issued and committed one transaction at a time and a
-- reader tailing by position never skips a record that commits later with a smaller position.
-- LOCK TABLE ... IN EXCLUSIVE MODE needs UPDATE, DELETE or TRUNCATE privilege; this function
-- (run with its owner's rights) lets a writer role that may only INSERT and SELECT take it.
CREATE FUNCTION public.titan_lock_ledger() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    LOCK TABLE public.stored_events IN EXCLUSIVE MODE;
END
$$;
REVOKE ALL ON FUNCTION public.titan_lock_ledger() FROM PUBLIC;
