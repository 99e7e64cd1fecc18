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

-- name: insert_outbox
INSERT INTO verification_outbox (registration_id, kind, partition)
SELECT registration_id, kind, $2
  FROM unnest($1::uuid[]) AS registration_id,
       unnest(enum_range(NULL::verification_kind)) AS kind
    ON CONFLICT DO NOTHING;

-- name: add_counts
INSERT INTO funnel_counts (name, shard, value)
SELECT name, $1, value FROM unnest($2::text[], $3::bigint[]) AS c(name, value)
    ON CONFLICT (name, shard) DO UPDATE SET value = funnel_counts.value + EXCLUDED.value;

-- name: take_outbox
-- The jobs of these registrations still waiting for their hand-off, locked
-- until the transaction ends (deleted if it commits).
DELETE FROM verification_outbox
 WHERE registration_id = ANY($1::uuid[])
RETURNING registration_id, kind::text, partition;

-- name: take_stale_outbox
-- Jobs whose own worker died before handing them off; SKIP LOCKED leaves
-- those another worker is handing off right now.
DELETE FROM verification_outbox
 WHERE (registration_id, kind) IN (
       SELECT registration_id, kind FROM verification_outbox
        WHERE created_at < now() - make_interval(secs => $1)
        ORDER BY created_at
        LIMIT $2
          FOR UPDATE SKIP LOCKED)
RETURNING registration_id, kind::text, partition;

-- name: insert_dead_letter
INSERT INTO dead_letters (stream, entry_id, reason, deliveries, payload)
VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (stream, entry_id) DO NOTHING
RETURNING dead_letter_id;
