-- Queries of the verification workers (email, NIK: one query loads a batch,
-- one statement records it) and of the door's verify-email link. Each state
-- change is guarded by the state it leaves, so a repeated job or click
-- changes nothing and counts nothing twice.

-- name: set_email_verified
-- From `failed` too: a message the relay bounced late may still have arrived.
UPDATE registrations
   SET email_verification = 'verified', updated_at = now()
 WHERE registration_id = $1 AND email_verification IN ('pending', 'sent', 'failed')
RETURNING 1;

-- name: email_state
SELECT email_verification::text FROM registrations WHERE registration_id = $1;

-- name: email_jobs
-- A batch of email jobs' registrations in one query ($1: their ids). The
-- separately sealed address only, never the full blob: the email worker holds
-- the address keys alone (docs/security.md).
SELECT r.registration_id, r.state::text, r.email_verification::text, r.address_key_id,
       r.sealed_address, coalesce(d.attempts, 0) AS attempts
  FROM unnest($1::uuid[]) AS j (registration_id)
  JOIN registrations AS r USING (registration_id)
  LEFT JOIN email_deliveries AS d USING (registration_id);

-- name: email_legacy_blobs
-- The full blobs of rows an older door stored without a sealed address ($1:
-- their ids): read only by an email worker configured with the sealing keys.
SELECT registration_id, key_id, sealed
  FROM registrations
 WHERE registration_id = ANY($1::uuid[]) AND sealed_address IS NULL;

-- name: record_email_outcomes
-- A batch's sends in one statement: tries counted in email_deliveries for
-- messages that needed more than one (or failed), `sent` and `failed` moved
-- from `pending` only (a repeat changes nothing),
-- the funnel counter moved by what changed. $1 ids, $2 outcomes (`sent`,
-- `failed`, `deferred`), $3 the errors (a code and a step, never an address),
-- $4 the counter shard.
WITH outcome AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])
           AS o (registration_id, outcome, error)
), locked AS MATERIALIZED (
    -- Rows locked in id order, as every batch statement does: the email and
    -- the NIK worker update the same registrations at once, and locks taken
    -- in a join's order would deadlock them now and then.
    SELECT registration_id FROM registrations
     WHERE registration_id = ANY($1::uuid[]) AND email_verification = 'pending'
     ORDER BY registration_id
       FOR NO KEY UPDATE
), tried AS (
    -- Only what needs remembering: a message sent at its first try (nearly
    -- all of them) leaves no row; a deferred or refused one counts its tries.
    INSERT INTO email_deliveries (registration_id, attempts, last_error)
    SELECT registration_id, 1, error FROM outcome WHERE outcome <> 'sent'
        ON CONFLICT (registration_id) DO UPDATE
       SET attempts = email_deliveries.attempts + 1, last_error = EXCLUDED.last_error
), sent_later AS (
    UPDATE email_deliveries AS d SET attempts = d.attempts + 1, sent_at = now(),
           last_error = NULL
      FROM outcome AS o
     WHERE d.registration_id = o.registration_id AND o.outcome = 'sent'
), changed AS (
    UPDATE registrations AS r
       SET email_verification = o.outcome::email_verification, updated_at = now()
      FROM outcome AS o JOIN locked USING (registration_id)
     WHERE r.registration_id = o.registration_id AND o.outcome IN ('sent', 'failed')
       AND r.email_verification = 'pending'
    RETURNING o.outcome, r.received_at
), moved AS (
    INSERT INTO funnel_counts (name, shard, value)
    SELECT 'email_sent', $4::smallint, count(*) FROM changed WHERE outcome = 'sent'
    HAVING count(*) > 0
        ON CONFLICT (name, shard) DO UPDATE SET value = funnel_counts.value + EXCLUDED.value
)
SELECT count(*) FILTER (WHERE outcome = 'sent') AS sent,
       count(*) FILTER (WHERE outcome = 'failed') AS failed,
       coalesce(array_agg(extract(epoch FROM now() - received_at)::float8), '{}') AS waited
  FROM changed;

-- name: nik_jobs
-- A batch of NIK jobs' registrations and any earlier answer for their NIKs.
SELECT r.registration_id, r.state::text, r.nik_verification::text, r.nik_hash, r.key_id,
       r.sealed, c.outcome::text AS cached
  FROM unnest($1::uuid[]) AS j (registration_id)
  JOIN registrations AS r USING (registration_id)
  LEFT JOIN nik_checks AS c ON c.nik_hash = r.nik_hash;

-- name: record_nik_outcomes
-- A batch's NIK outcomes in one statement: the ministry's answers cached
-- (never `failed`, which says only that we could not ask), each registration
-- moved from `pending` only, the funnel counters by what changed. $1 ids,
-- $2 NIK hashes, $3 outcomes, $4 the counter shard.
WITH outcome AS (
    SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::text[])
           AS o (registration_id, nik_hash, outcome)
), locked AS MATERIALIZED (
    -- In id order (see record_email_outcomes).
    SELECT registration_id FROM registrations
     WHERE registration_id = ANY($1::uuid[]) AND nik_verification = 'pending'
     ORDER BY registration_id
       FOR NO KEY UPDATE
), cached AS (
    INSERT INTO nik_checks (nik_hash, outcome)
    SELECT nik_hash, outcome::nik_verification FROM outcome
     WHERE outcome IN ('verified', 'mismatch', 'not_found')
        ON CONFLICT (nik_hash) DO NOTHING
), changed AS (
    UPDATE registrations AS r
       SET nik_verification = o.outcome::nik_verification, updated_at = now()
      FROM outcome AS o JOIN locked USING (registration_id)
     WHERE r.registration_id = o.registration_id AND r.nik_verification = 'pending'
    RETURNING o.outcome, r.received_at
), moved AS (
    INSERT INTO funnel_counts (name, shard, value)
    SELECT CASE WHEN outcome = 'verified' THEN 'nik_verified' ELSE 'nik_rejected' END,
           $4::smallint, count(*)
      FROM changed WHERE outcome <> 'failed'
     GROUP BY 1
        ON CONFLICT (name, shard) DO UPDATE SET value = funnel_counts.value + EXCLUDED.value
)
SELECT count(*) AS changed,
       coalesce(array_agg(extract(epoch FROM now() - received_at)::float8), '{}') AS waited
  FROM changed;
