-- The auditor's view (SPEC §2): one row per record, each envelope field a column. Same columns,
-- in the same order, as the embedded ledger's view, with typed values (ts_ns bigint, phase_id
-- integer, data jsonb) and `ts`, the record's time as a timestamptz (microseconds), at the end.

CREATE VIEW public.titan_records AS
SELECT e.notification_id AS position,
       e.originator_id AS stream_id,
       e.originator_version AS version,
       e.topic AS type,
       j ->> 'event_id' AS event_id,
       (j ->> 'ts_ns')::bigint AS ts_ns,
       j ->> 'command_id' AS command_id,
       j ->> 'correlation_id' AS correlation_id,
       j ->> 'causation_id' AS causation_id,
       j ->> 'intent_id' AS intent_id,
       (j ->> 'phase_id')::integer AS phase_id,
       j ->> 'actor' AS actor,
       j ->> 'policy_hash' AS policy_hash,
       j ->> 'prev_hash' AS prev_hash,
       j ->> 'hash' AS hash,
       j -> 'data' AS data,
       to_timestamp((j ->> 'ts_ns')::numeric / 1000000000) AS ts
FROM public.stored_events AS e
CROSS JOIN LATERAL (SELECT convert_from(e.state, 'UTF8')::jsonb AS j) AS envelope;
