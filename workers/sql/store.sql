-- Queries of the drain (workers/store.py). Each starts with `-- name: <name>`.

-- name: create_staging
-- One per connection; emptied at every commit.
CREATE TEMP TABLE IF NOT EXISTS store_staging (
    registration_id    uuid               NOT NULL,
    received_at        timestamptz        NOT NULL,
    state              registration_state NOT NULL,
    nik_hash           bytea              NOT NULL,
    email_hash         bytea              NOT NULL,
    key_id             text               NOT NULL,
    sealed             bytea              NOT NULL
) ON COMMIT DELETE ROWS;

-- name: first_registrations
-- Which of these NIK and email hashes already have a registration that is not
-- a duplicate, and which NIKs are blacklisted: three index probes per hash.
SELECT 'nik' AS kind, nik_hash AS hash FROM registrations
 WHERE nik_hash = ANY($1::bytea[]) AND state <> 'duplicate'
UNION ALL
SELECT 'email', email_hash FROM registrations
 WHERE email_hash = ANY($2::bytea[]) AND state <> 'duplicate'
UNION ALL
SELECT 'blacklist', nik_hash FROM nik_blacklist
 WHERE nik_hash = ANY($1::bytea[]);

-- name: insert_staged
-- A redelivered entry conflicts on the primary key and changes nothing; an
-- entry that lost a race with a concurrent batch on a NIK or email conflicts
-- on a partial unique index, and is stored as a duplicate by insert_lost.
INSERT INTO registrations (
    registration_id, received_at, state, email_verification, nik_verification,
    nik_hash, email_hash, key_id, sealed)
SELECT registration_id, received_at, state,
       CASE WHEN state = 'accepted' THEN 'pending' ELSE 'skipped' END::email_verification,
       CASE WHEN state = 'accepted' THEN 'pending' ELSE 'skipped' END::nik_verification,
       nik_hash, email_hash, key_id, sealed
  FROM store_staging
 ORDER BY registration_id
    ON CONFLICT DO NOTHING
RETURNING registration_id, state;

-- name: insert_lost
INSERT INTO registrations (
    registration_id, received_at, state, email_verification, nik_verification,
    nik_hash, email_hash, key_id, sealed)
SELECT registration_id, received_at, 'duplicate', 'skipped', 'skipped',
       nik_hash, email_hash, key_id, sealed
  FROM store_staging
 WHERE registration_id = ANY($1::uuid[])
    ON CONFLICT DO NOTHING
RETURNING registration_id, state;

-- name: insert_handoff
-- One row per batch: the accepted registrations whose jobs are still to be relayed.
INSERT INTO verification_handoffs (partition, registration_ids)
VALUES ($1, $2::uuid[])
RETURNING handoff_id;

-- name: add_counts
INSERT INTO funnel_counts (name, shard, value)
SELECT name, $1, value FROM unnest($2::text[], $3::bigint[]) AS c(name, value)
    ON CONFLICT (name, shard) DO UPDATE SET value = funnel_counts.value + EXCLUDED.value;

-- name: forget_handoff
DELETE FROM verification_handoffs WHERE handoff_id = $1;

-- name: take_stale_handoffs
-- Hand-offs whose own worker died before relaying them; SKIP LOCKED leaves
-- those another sweeper is relaying right now. Deleted if the caller commits.
DELETE FROM verification_handoffs
 WHERE handoff_id IN (
       SELECT handoff_id FROM verification_handoffs
        WHERE created_at < now() - make_interval(secs => $1)
        ORDER BY created_at
        LIMIT $2
          FOR UPDATE SKIP LOCKED)
RETURNING handoff_id, partition, registration_ids;

-- name: insert_dead_letter
INSERT INTO dead_letters (stream, entry_id, reason, deliveries, payload)
VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (stream, entry_id) DO NOTHING
RETURNING dead_letter_id;
