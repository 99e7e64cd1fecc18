-- Queries of the drain (workers/store.py). Each starts with `-- name: <name>`.

-- name: insert_batch
-- One statement per batch, rows in intake order (registration ids are
-- UUIDv7). It lets the indexes decide: a redelivered entry conflicts on the
-- primary key; a registration whose NIK or email an earlier one that is not
-- a duplicate already has (stored before, or earlier in this batch, or by a
-- concurrent batch) conflicts on a partial unique index. Either is left out
-- by ON CONFLICT DO NOTHING and is not returned; insert_duplicates stores
-- the second kind. A blacklisted NIK is ineligible.
INSERT INTO registrations (
    registration_id, received_at, state, email_verification, nik_verification,
    nik_hash, email_hash, key_id, sealed)
SELECT r.registration_id, to_timestamp(r.received_ms::float8 / 1000),
       CASE WHEN b.nik_hash IS NULL THEN 'accepted' ELSE 'ineligible' END::registration_state,
       CASE WHEN b.nik_hash IS NULL THEN 'pending' ELSE 'skipped' END::email_verification,
       CASE WHEN b.nik_hash IS NULL THEN 'pending' ELSE 'skipped' END::nik_verification,
       r.nik_hash, r.email_hash, r.key_id, r.sealed
  FROM unnest($1::uuid[], $2::bigint[], $3::bytea[], $4::bytea[], $5::text[], $6::bytea[])
       AS r (registration_id, received_ms, nik_hash, email_hash, key_id, sealed)
  LEFT JOIN nik_blacklist AS b ON b.nik_hash = r.nik_hash
 ORDER BY r.registration_id
    ON CONFLICT DO NOTHING
RETURNING registration_id, state;

-- name: insert_duplicates
-- The entries insert_batch left out; redelivered ones conflict on the key again.
INSERT INTO registrations (
    registration_id, received_at, state, email_verification, nik_verification,
    nik_hash, email_hash, key_id, sealed)
SELECT r.registration_id, to_timestamp(r.received_ms::float8 / 1000), 'duplicate', 'skipped',
       'skipped', r.nik_hash, r.email_hash, r.key_id, r.sealed
  FROM unnest($1::uuid[], $2::bigint[], $3::bytea[], $4::bytea[], $5::text[], $6::bytea[])
       AS r (registration_id, received_ms, nik_hash, email_hash, key_id, sealed)
 ORDER BY r.registration_id
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
