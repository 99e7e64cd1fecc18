-- Queries of the door's public port (intake/storage.py), each bounded by
-- postgres.door_timeout_seconds.

-- name: registration_status
SELECT registration_id, state::text, email_verification::text, nik_verification::text,
       updated_at
  FROM registrations
 WHERE registration_id = $1;

-- name: resend_email
-- A resend (POST /v1/registrations/{id}/verification-email) makes the email
-- worker send again: it sends only for `pending`, so `sent` and `failed` go
-- back to `pending`, guarded by the states they leave (a link clicked
-- meanwhile wins: `verified` stays). A `sent` that goes back takes its
-- `email_sent` away again, so the counter keeps equal to the emails sent and
-- not asked for again; the send that follows adds it back. Every sub-statement
-- sees the row as it was, so `previous` is the state before this change.
-- $1 the id, $2 the counter shard. No row: no such registration.
WITH moved AS (
    UPDATE registrations
       SET email_verification = 'pending', updated_at = now()
     WHERE registration_id = $1 AND state = 'accepted'
       AND email_verification IN ('sent', 'failed')
    RETURNING registration_id
), uncounted AS (
    INSERT INTO funnel_counts (name, shard, value)
    SELECT 'email_sent', $2::smallint, -1
      FROM moved JOIN registrations AS before USING (registration_id)
     WHERE before.email_verification = 'sent'
        ON CONFLICT (name, shard) DO UPDATE SET value = funnel_counts.value + EXCLUDED.value
)
SELECT before.state::text, before.email_verification::text AS previous,
       EXISTS (SELECT FROM moved) AS moved
  FROM registrations AS before
 WHERE registration_id = $1;

-- name: archived_audit_page
-- The admin audit archive, newest first, strictly before a cursor (an entry id
-- split into its two numbers; $1 NULL: from the newest), $3 rows.
SELECT stream_id, at, actor, source, action, changes::text AS changes
  FROM audit_log
 WHERE $1::bigint IS NULL
    OR (split_part(stream_id, '-', 1)::bigint, split_part(stream_id, '-', 2)::bigint)
       < ($1::bigint, $2::bigint)
 ORDER BY split_part(stream_id, '-', 1)::bigint DESC, split_part(stream_id, '-', 2)::bigint DESC
 LIMIT $3;
