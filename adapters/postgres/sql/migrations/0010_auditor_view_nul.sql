-- The auditor's view copes with U+0000 in a record (issue 9): jsonb cannot hold it, so a record
-- whose JSON holds the escape \u0000 (a halt reason recorded before text was bounded) made every
-- query of titan_records that touches `data` fail. The view now reads such a record with each
-- \u0000 escape shown as \ufffd (U+FFFD, the replacement character); every other record is read
-- exactly as before. Nothing stored changes: the records, their bytes and their hashes are the
-- ledger's (`titan ledger verify` and the export read them, U+0000 included).
--
-- Only real escapes are replaced, not the text "\u0000" (an escaped backslash followed by
-- "u0000"): escaped backslashes (\\) are first set aside as U+0001, which canonical JSON never
-- holds raw (control characters are always escaped), then put back. Same columns, in the same
-- order, as 0003.

CREATE OR REPLACE VIEW public.titan_records AS
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
CROSS JOIN LATERAL (SELECT convert_from(e.state, 'UTF8') AS t) AS raw
CROSS JOIN LATERAL (
    SELECT CASE
               WHEN strpos(raw.t, '\u0000') = 0 THEN raw.t::jsonb
               ELSE replace(replace(replace(raw.t, '\\', chr(1)), '\u0000', '\ufffd'), chr(1), '\\')::jsonb
           END AS j
) AS envelope;
