-- One round trip per append (issue 14): titan_append() does, in its statement's own transaction,
-- what an append did in four: the lock timeout and eventsourcing's table lock; the anchor checked
-- against the head the caller sealed its records onto; the leases of the writers whose records it
-- carries; the stream versions; the insert, in chain order; the anchor's move; the notifications.
-- It never seals: the records arrive sealed (their hashes cover the bytes as stored), so the bytes
-- are exactly those of the four-round-trip path, which ledgers opened without this function use.
--
-- One call carries the appends ("entries") of many writers, each in the records' order. When one
-- of them may not be written, the function writes nothing and says which and why; the caller
-- fails that entry alone and calls again with the others:
--   stale    the anchor is not the head the caller sealed onto: here is the current head
--   anchor   the anchor disagrees with the last record (someone removed records): nothing is safe
--   refused  entries refused, as a jsonb array of {"entry": n (0-based), "refusal": kind, ...}:
--            held_elsewhere {key}           an account stream written outside its writer while a
--                                           writer holds its lease (shared advisory xact lock)
--            lease_lost                     the entry's lease session is alive but no longer
--                                           holds its lease (exclusive session advisory lock)
--            session_gone                   no session with the lease's (pid, backend_start):
--                                           the lease's connection was lost (a pid that the
--                                           server reused for another session does not pass)
--            version {stream, version, expected}   the entry's first record whose version is
--                                           not its stream's next
--   appended positions of the records, in order; the head after
-- Version refusals are exact: the first entry with a bad version, and any other whose streams no
-- other entry of the call writes (where entries share a stream, the later ones are checked again
-- in the next call, without the refused ones).
--
-- Arguments, besides the lock timeout, the sealed-onto head and the last record's hash: per entry
-- its lease (key, pid, backend_start; NULLs for an append outside a writer); the (entry, key) of
-- each account stream an entry writes without holding its lease; the call's streams, each once;
-- per record, in chain order: its entry, its stream (1-based, in stream_ids), its rank among the
-- call's records of that stream (1, 2, ...: it must be version current + rank), version, type and
-- stored bytes. Naming each stream once keeps the version check to one index probe per stream
-- and no sort (a stream named twice is only probed twice). The ranks are the caller's, as the
-- four-round-trip path's version check was: a wrong one could only let through a version that
-- skips ahead or comes out of order, never a repeat (the primary key refuses it).
--
-- SECURITY DEFINER, like titan_lock_ledger(): a writer role that may only INSERT and SELECT runs
-- it with the owner's right to take the table lock. It reads pg_stat_activity with the owner's
-- rights too: the owner must see the writer role's sessions' backend_start (a superuser does; a
-- member of the writer role or of pg_read_all_stats does; roles.sql grants the membership). It
-- refuses to run, rather than call every lease lost, when it cannot. Its statements are planned
-- once per session (generic plans): a call is mostly arrays of the same shape.

CREATE FUNCTION public.titan_append(
    lock_timeout_ms integer,
    sealed_after_position bigint,
    sealed_after_hash text,
    sealed_head_hash text,
    lease_class integer,
    lease_keys integer[],
    lease_pids integer[],
    lease_starts timestamptz[],
    guard_entries integer[],
    guard_keys integer[],
    stream_ids text[],
    record_entries integer[],
    record_streams integer[],
    record_ranks integer[],
    versions bigint[],
    topics text[],
    states bytea[],
    OUT outcome text,
    OUT positions bigint[],
    OUT head_position bigint,
    OUT head_hash text,
    OUT head_count bigint,
    OUT last_position bigint,
    OUT refusals jsonb
)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    entries integer := cardinality(lease_keys);
    streams integer := cardinality(stream_ids);
    records integer := cardinality(record_entries);
    database_oid oid := (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database());
    current_versions bigint[];
    in_order boolean;
BEGIN
    IF lock_timeout_ms IS NULL OR lock_timeout_ms < 1 OR lease_class IS NULL OR entries IS NULL
       OR entries < 1 OR records IS NULL OR records < 1 OR streams IS NULL OR streams < 1
       OR cardinality(lease_pids) IS DISTINCT FROM entries
       OR cardinality(lease_starts) IS DISTINCT FROM entries
       OR cardinality(guard_keys) IS DISTINCT FROM cardinality(guard_entries)
       OR cardinality(record_streams) IS DISTINCT FROM records
       OR cardinality(record_ranks) IS DISTINCT FROM records
       OR cardinality(versions) IS DISTINCT FROM records
       OR cardinality(topics) IS DISTINCT FROM records
       OR cardinality(states) IS DISTINCT FROM records
       OR sealed_head_hash IS NULL OR sealed_head_hash !~ '^[0-9a-f]{64}$'
       OR EXISTS (SELECT FROM unnest(record_entries, record_streams, record_ranks) AS r(e, i, k)
                  WHERE e IS NULL OR e < 0 OR e >= entries OR i IS NULL OR i < 1 OR i > streams
                     OR k IS NULL OR k < 1)
       OR EXISTS (SELECT FROM unnest(guard_entries) AS e WHERE e IS NULL OR e < 0 OR e >= entries) THEN
        RAISE EXCEPTION 'titan ledger: titan_append() called with inconsistent arguments'
            USING HINT = 'one lease key, pid and start per entry; per record its entry, stream '
                         'index, rank, version, type and state; the sealed head as a hex SHA-256';
    END IF;

    PERFORM set_config('lock_timeout', lock_timeout_ms || 'ms', true);
    LOCK TABLE public.stored_events IN EXCLUSIVE MODE;

    SELECT h.position, h.hash, h.record_count INTO head_position, head_hash, head_count
    FROM public.titan_chain_head AS h WHERE h.id = 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'titan ledger: the anchor row (titan_chain_head id 1) is missing';
    END IF;
    last_position := coalesce((SELECT max(e.notification_id) FROM public.stored_events AS e), 0);
    IF last_position <> head_position THEN
        outcome := 'anchor';
        RETURN;
    END IF;
    IF head_position IS DISTINCT FROM sealed_after_position OR head_hash IS DISTINCT FROM sealed_after_hash THEN
        outcome := 'stale';
        RETURN;
    END IF;

    IF EXISTS (SELECT FROM pg_stat_activity AS a
               WHERE a.pid = ANY (lease_pids) AND a.backend_start IS NULL) THEN
        RAISE EXCEPTION 'titan ledger: titan_append() runs as % and cannot see the start time of '
                        'the writers'' lease sessions, so it cannot check their leases', current_user
            USING HINT = 'grant the writer role (or pg_read_all_stats) to the owner of the ledger''s '
                         'tables: adapters/postgres/sql/roles.sql does';
    END IF;
    SELECT jsonb_agg(refusal ORDER BY n) INTO refusals FROM (
        SELECT l.n, jsonb_build_object(
                   'entry', l.n - 1,
                   'refusal', CASE WHEN a.pid IS NULL THEN 'session_gone' ELSE 'lease_lost' END) AS refusal
        FROM unnest(lease_keys, lease_pids, lease_starts) WITH ORDINALITY AS l(k, p, s, n)
        LEFT JOIN pg_stat_activity AS a ON a.pid = l.p AND a.backend_start = l.s
        WHERE l.k IS NOT NULL AND (a.pid IS NULL OR NOT EXISTS (
            SELECT FROM pg_locks AS x
            WHERE x.locktype = 'advisory' AND x.granted AND x.mode = 'ExclusiveLock'
              AND x.pid = l.p AND x.database = database_oid AND x.classid = lease_class::oid
              AND x.objid = l.k::oid AND x.objsubid = 2))
        UNION ALL
        SELECT entries + g.n, jsonb_build_object('entry', g.e, 'refusal', 'held_elsewhere', 'key', g.k)
        FROM unnest(guard_entries, guard_keys) WITH ORDINALITY AS g(e, k, n)
        WHERE NOT pg_try_advisory_xact_lock_shared(lease_class, g.k)
    ) AS refused;
    IF refusals IS NOT NULL THEN
        outcome := 'refused';
        RETURN;
    END IF;

    -- Each stream's current version: one backward index scan per stream, whatever its length.
    current_versions := ARRAY(
        SELECT coalesce((SELECT max(x.originator_version) FROM public.stored_events AS x
                         WHERE x.originator_id = u.s), 0)
        FROM unnest(stream_ids) WITH ORDINALITY AS u(s, n)
        ORDER BY u.n);
    WITH bad AS MATERIALIZED (
        SELECT DISTINCT ON (r.e) r.e, r.i, r.v, current_versions[r.i] + r.k AS expected
        FROM unnest(record_entries, record_streams, record_ranks, versions) WITH ORDINALITY AS r(e, i, k, v, n)
        WHERE r.v <> current_versions[r.i] + r.k
        ORDER BY r.e, r.n
    ), shared AS (
        SELECT r.i FROM unnest(record_entries, record_streams) AS r(e, i)
        GROUP BY r.i HAVING count(DISTINCT r.e) > 1
    )
    SELECT jsonb_agg(jsonb_build_object('entry', b.e, 'refusal', 'version', 'stream', stream_ids[b.i],
                                        'version', b.v, 'expected', b.expected) ORDER BY b.e)
    INTO refusals
    FROM bad AS b
    WHERE b.e = (SELECT min(bad.e) FROM bad)
       OR NOT EXISTS (SELECT FROM unnest(record_entries, record_streams) AS r(e, i)
                      WHERE r.e = b.e AND r.i IN (SELECT shared.i FROM shared));
    IF refusals IS NOT NULL THEN
        outcome := 'refused';
        RETURN;
    END IF;

    -- Rows are inserted in chain order (unnest yields the arrays in order; no sort of the wide rows
    -- is needed), so positions rise along the chain: checked, the records in position order must
    -- be the records in chain order, or nothing is written.
    WITH inserted AS (
        INSERT INTO public.stored_events (originator_id, originator_version, topic, state)
        SELECT stream_ids[r.i], r.v, r.t, r.s FROM unnest(record_streams, versions, topics, states) AS r(i, v, t, s)
        RETURNING notification_id, originator_id, originator_version
    )
    SELECT array_agg(i.notification_id ORDER BY i.notification_id),
           array_agg(i.originator_id ORDER BY i.notification_id)
               = ARRAY(SELECT stream_ids[r.i] FROM unnest(record_streams) WITH ORDINALITY AS r(i, n) ORDER BY r.n)
           AND array_agg(i.originator_version ORDER BY i.notification_id) = versions
           AND min(i.notification_id) > head_position
    INTO positions, in_order
    FROM inserted AS i;
    IF in_order IS NOT TRUE THEN
        RAISE EXCEPTION 'titan ledger: the database assigned positions % after %: they must rise in '
                        'the order of the records; nothing was appended', positions, head_position;
    END IF;

    head_position := positions[records];
    head_hash := sealed_head_hash;
    head_count := head_count + records;
    UPDATE public.titan_chain_head
    SET position = head_position, hash = head_hash, record_count = head_count
    WHERE id = 1;
    PERFORM pg_notify('titan_ledger', head_position::text);
    PERFORM pg_notify('stored_events', '');
    outcome := 'appended';
END
$$;
REVOKE ALL ON FUNCTION public.titan_append(integer, bigint, text, text, integer, integer[], integer[],
    timestamptz[], integer[], integer[], text[], integer[], integer[], integer[], bigint[], text[],
    bytea[]) FROM PUBLIC;

-- Whoever may take the ordering lock (the writer roles roles.sql set up) may append this way.
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT r.rolname
        FROM pg_proc AS p
        CROSS JOIN LATERAL aclexplode(p.proacl) AS a
        JOIN pg_roles AS r ON r.oid = a.grantee
        WHERE p.oid = 'public.titan_lock_ledger()'::regprocedure
          AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION public.titan_append(integer, bigint, text, text, '
                       'integer, integer[], integer[], timestamptz[], integer[], integer[], text[], '
                       'integer[], integer[], integer[], bigint[], text[], bytea[]) TO %I', grantee);
    END LOOP;
END
$$;
