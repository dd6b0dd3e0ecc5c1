-- Immutability enforced by PostgreSQL itself (SPEC §2): UPDATE, DELETE and TRUNCATE on the ledger's
-- tables are refused, whoever asks. Statement-level triggers fire even when no row matches.
-- The anchor is the one row that moves: forward only, and never away.

CREATE FUNCTION public.titan_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'titan ledger: % on %.% is refused: the ledger is append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING HINT = 'records are never changed or removed; append a correcting record instead';
END
$$;

CREATE FUNCTION public.titan_anchor_moves_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.position <= OLD.position OR NEW.record_count <= OLD.record_count THEN
        RAISE EXCEPTION 'titan ledger: the chain head may only move forward (from position % count % to position % count %)',
            OLD.position, OLD.record_count, NEW.position, NEW.record_count;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER titan_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON public.stored_events
    FOR EACH STATEMENT EXECUTE FUNCTION public.titan_refuse_change();
CREATE TRIGGER titan_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON public.titan_meta
    FOR EACH STATEMENT EXECUTE FUNCTION public.titan_refuse_change();
CREATE TRIGGER titan_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON public.titan_schema_migrations
    FOR EACH STATEMENT EXECUTE FUNCTION public.titan_refuse_change();
CREATE TRIGGER titan_append_only BEFORE DELETE OR TRUNCATE ON public.titan_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION public.titan_refuse_change();
CREATE TRIGGER titan_forward_only BEFORE UPDATE ON public.titan_chain_head
    FOR EACH ROW EXECUTE FUNCTION public.titan_anchor_moves_forward();
