-- Least-privilege roles for a titan ledger database (docs/postgres.md, "Roles").
--
-- Run as the owner of the ledger's tables (the role that ran `titan db upgrade`), with CREATEROLE:
--     psql "postgresql://owner@host/db" -f adapters/postgres/sql/roles.sql
-- Role names default to titan_writer and titan_auditor; choose others with
--     PGOPTIONS="-c titan.writer_role=NAME -c titan.auditor_role=NAME" psql ... -f ...
-- Idempotent: roles are created when missing, grants repeated harmlessly. Passwords and
-- pg_hba.conf entries are the operator's to set.
--
-- writer:  SELECT and INSERT on stored_events (no UPDATE, DELETE, TRUNCATE, no ownership, so it
--          can neither change a record nor disable the append-only triggers), the anchor row
--          (SELECT, UPDATE; its trigger only lets it move forward), and the ordering lock through
--          titan_lock_ledger(), and the one-round-trip append titan_append() (0005_append.sql).
--          titan_append() checks the writers' leases in pg_stat_activity with its owner's rights,
--          and PostgreSQL shows a session's start time only to its own role, its members and
--          pg_read_all_stats: an owner that is not a superuser is made a member of the writer role
--          (which gives it nothing it did not have: it owns the tables).
--          SELECT, INSERT and DELETE on titan_snapshots (0004_snapshots.sql): account snapshots,
--          a cache outside the chain that `titan replay verify` proves against the fold.
-- auditor: SELECT on the titan_records view only.

DO $$
DECLARE
    writer text := coalesce(nullif(current_setting('titan.writer_role', true), ''), 'titan_writer');
    auditor text := coalesce(nullif(current_setting('titan.auditor_role', true), ''), 'titan_auditor');
    append_function text := 'public.titan_append(integer, bigint, text, text, integer, integer[], '
        'integer[], timestamptz[], integer[], integer[], text[], integer[], integer[], integer[], '
        'bigint[], text[], bytea[])';
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = writer) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', writer);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = auditor) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', auditor);
    END IF;
    REVOKE ALL ON public.stored_events, public.titan_meta, public.titan_chain_head,
        public.titan_schema_migrations, public.titan_records FROM PUBLIC;
    EXECUTE format('GRANT SELECT, INSERT ON public.stored_events TO %I', writer);
    EXECUTE format('GRANT USAGE ON SEQUENCE public.stored_events_notification_id_seq TO %I', writer);
    EXECUTE format('GRANT SELECT, UPDATE ON public.titan_chain_head TO %I', writer);
    EXECUTE format('GRANT SELECT ON public.titan_meta, public.titan_schema_migrations TO %I', writer);
    EXECUTE format('GRANT EXECUTE ON FUNCTION public.titan_lock_ledger() TO %I', writer);
    EXECUTE format('GRANT SELECT ON public.titan_records TO %I', auditor);
    IF to_regclass('public.titan_snapshots') IS NOT NULL THEN
        -- Account snapshots (0004_snapshots.sql): outside the chain; the writer stores, reads and
        -- prunes its own, readers of the ledger read them (docs/ledger.md, "Snapshots").
        REVOKE ALL ON public.titan_snapshots FROM PUBLIC;
        EXECUTE format('GRANT SELECT, INSERT, DELETE ON public.titan_snapshots TO %I', writer);
    END IF;
    IF to_regprocedure(append_function) IS NOT NULL THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', append_function, writer);
        IF NOT pg_has_role(current_user, writer, 'USAGE')
           AND NOT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') THEN
            BEGIN
                EXECUTE format('GRANT %I TO %I', writer, current_user);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'titan: % cannot see the start time of %''s sessions, so titan_append() '
                              'will refuse to check their leases', current_user, writer
                    USING HINT = format('as a superuser: GRANT %I TO %I (or GRANT pg_read_all_stats TO %I)',
                                        writer, current_user, current_user);
            END;
        END IF;
    END IF;
END
$$;
