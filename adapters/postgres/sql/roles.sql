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
--          titan_lock_ledger().
-- auditor: SELECT on the titan_records view only.

DO $$
DECLARE
    writer text := coalesce(nullif(current_setting('titan.writer_role', true), ''), 'titan_writer');
    auditor text := coalesce(nullif(current_setting('titan.auditor_role', true), ''), 'titan_auditor');
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
END
$$;
