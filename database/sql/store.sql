-- Queries of the drain (workers/drain/store.py). Each starts with `-- name: <name>`.

-- name: store_batch
-- A whole batch in one statement (one round trip, one commit), rows in
-- intake order (registration ids are UUIDv7). `first` lets the indexes
-- decide: a redelivered entry conflicts on the primary key; a registration
-- whose NIK or email an earlier one that is not a duplicate already has
-- (stored before, or earlier in this batch, or by a concurrent batch)
-- conflicts on a partial unique index. Either is left out by ON CONFLICT DO
-- NOTHING; `later` inserts the left-out ones again as duplicates, and the
-- redelivered ones conflict on the key again. A blacklisted NIK is
-- ineligible. Then one outbox row holds the accepted ids, the funnel
-- counters move by what was inserted, and the outbox rows this worker has
-- relayed since its last batch ($9) are deleted. $11 and $12: each entry's
-- separately sealed address and its key id (NULL for an older door's entry).
--
-- Fenced: `fence` raises the partition's epoch to the worker's lease epoch
-- ($10), or, when a newer holder of the lease has written already, updates
-- nothing, and then `input` is empty and the statement writes nothing
-- (`fenced_in` false: the worker raises LeaseLost). The row lock on the
-- fence orders a partition's writers: a stale statement that waited in a
-- hung PostgreSQL sees the newer epoch once it runs.
--
-- `later` reads `first`'s output, so `first` has inserted every row before
-- `later` inserts one (the sub-statements of one WITH see one snapshot, but
-- the unique checks see the rows this transaction inserted).
WITH fence AS (
    INSERT INTO drain_fences AS f (partition, epoch) VALUES ($7::smallint, $10::bigint)
        ON CONFLICT (partition) DO UPDATE SET epoch = EXCLUDED.epoch
        WHERE f.epoch <= EXCLUDED.epoch
    RETURNING epoch
), input AS (
    SELECT *
      FROM unnest($1::uuid[], $2::bigint[], $3::bytea[], $4::bytea[], $5::text[], $6::bytea[],
                  $11::text[], $12::bytea[])
           AS r (registration_id, received_ms, nik_hash, email_hash, key_id, sealed,
                 address_key_id, sealed_address)
     WHERE EXISTS (SELECT FROM fence)
), first AS (
    INSERT INTO registrations (
        registration_id, received_at, state, email_verification, nik_verification,
        nik_hash, email_hash, key_id, sealed, address_key_id, sealed_address)
    SELECT r.registration_id, to_timestamp(r.received_ms::float8 / 1000),
           CASE WHEN b.nik_hash IS NULL THEN 'accepted' ELSE 'ineligible' END::registration_state,
           CASE WHEN b.nik_hash IS NULL THEN 'pending' ELSE 'skipped' END::email_verification,
           CASE WHEN b.nik_hash IS NULL THEN 'pending' ELSE 'skipped' END::nik_verification,
           r.nik_hash, r.email_hash, r.key_id, r.sealed, r.address_key_id, r.sealed_address
      FROM input AS r
      LEFT JOIN nik_blacklist AS b ON b.nik_hash = r.nik_hash
     ORDER BY r.registration_id
        ON CONFLICT DO NOTHING
    RETURNING registration_id, state
), later AS (
    INSERT INTO registrations (
        registration_id, received_at, state, email_verification, nik_verification,
        nik_hash, email_hash, key_id, sealed, address_key_id, sealed_address)
    SELECT r.registration_id, to_timestamp(r.received_ms::float8 / 1000), 'duplicate',
           'skipped', 'skipped', r.nik_hash, r.email_hash, r.key_id, r.sealed,
           r.address_key_id, r.sealed_address
      FROM input AS r
     WHERE r.registration_id NOT IN (SELECT registration_id FROM first)
     ORDER BY r.registration_id
        ON CONFLICT DO NOTHING
    RETURNING registration_id
), accepted AS (
    SELECT registration_id FROM first WHERE state = 'accepted'
), handoff AS (
    INSERT INTO verification_handoffs (partition, registration_ids)
    SELECT $7::smallint, array_agg(registration_id ORDER BY registration_id)
      FROM accepted
    HAVING count(*) > 0
    RETURNING handoff_id
), tally AS (
    SELECT count(*) FILTER (WHERE state = 'accepted') AS accepted,
           count(*) FILTER (WHERE state = 'ineligible') AS ineligible,
           (SELECT count(*) FROM later) AS duplicate
      FROM first
), moved AS (
    INSERT INTO funnel_counts (name, shard, value)
    SELECT c.name, $8::smallint, c.value
      FROM tally AS t,
           LATERAL (VALUES ('stored', t.accepted + t.ineligible + t.duplicate),
                           ('accepted', t.accepted), ('ineligible', t.ineligible),
                           ('duplicate', t.duplicate)) AS c (name, value)
     WHERE c.value > 0
        ON CONFLICT (name, shard) DO UPDATE SET value = funnel_counts.value + EXCLUDED.value
), forgotten AS (
    DELETE FROM verification_handoffs
     WHERE handoff_id = ANY($9::bigint[]) AND EXISTS (SELECT FROM fence)
)
SELECT (SELECT handoff_id FROM handoff) AS handoff_id,
       -- The ids as the hand-off script takes them: 16 bytes each, concatenated.
       (SELECT string_agg(uuid_send(registration_id), ''::bytea ORDER BY registration_id)
          FROM accepted) AS accepted_ids,
       t.accepted, t.ineligible, t.duplicate,
       EXISTS (SELECT FROM fence) AS fenced_in
  FROM tally AS t;

-- name: add_counts
INSERT INTO funnel_counts (name, shard, value)
SELECT name, $1, value FROM unnest($2::text[], $3::bigint[]) AS c(name, value)
    ON CONFLICT (name, shard) DO UPDATE SET value = funnel_counts.value + EXCLUDED.value;

-- name: forget_handoffs
-- Outbox rows whose jobs are in Redis (normally deleted by the next batch's store_batch).
DELETE FROM verification_handoffs WHERE handoff_id = ANY($1::bigint[]);

-- name: take_handoffs
-- Outbox rows with a kind not yet relayed whose stream has room now ($1: the
-- partitions whose email stream has room, $2: whose NIK stream has), oldest
-- first: rows the verification window holds back, and rows whose own worker
-- died before relaying them. Rows at least $3 seconds old (a live worker
-- relays its own within milliseconds); SKIP LOCKED leaves those another
-- refill is relaying right now. The ids come out as the hand-off script
-- takes them.
SELECT h.handoff_id, h.partition, h.email_relayed, h.nik_relayed,
       (SELECT string_agg(uuid_send(id), ''::bytea ORDER BY n)
          FROM unnest(h.registration_ids) WITH ORDINALITY AS u (id, n)) AS registration_ids
  FROM verification_handoffs AS h
 WHERE h.created_at < now() - make_interval(secs => $3)
   AND ((h.partition = ANY($1::smallint[]) AND NOT h.email_relayed)
        OR (h.partition = ANY($2::smallint[]) AND NOT h.nik_relayed))
 ORDER BY h.handoff_id
 LIMIT $4
   FOR UPDATE SKIP LOCKED;

-- name: mark_handoffs
-- The kinds of these rows now on the streams (the rest wait for room).
UPDATE verification_handoffs AS h
   SET email_relayed = h.email_relayed OR m.email, nik_relayed = h.nik_relayed OR m.nik
  FROM unnest($1::bigint[], $2::bool[], $3::bool[]) AS m (handoff_id, email, nik)
 WHERE h.handoff_id = m.handoff_id;

-- name: fence
-- The fence of store_batch alone, first in a transaction that writes dead
-- letters: the epoch row when this worker's epoch ($2) may write, else none.
INSERT INTO drain_fences AS f (partition, epoch) VALUES ($1::smallint, $2::bigint)
    ON CONFLICT (partition) DO UPDATE SET epoch = EXCLUDED.epoch
    WHERE f.epoch <= EXCLUDED.epoch
RETURNING epoch;

-- name: insert_dead_letter
INSERT INTO dead_letters (stream, entry_id, reason, deliveries, payload)
VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (stream, entry_id) DO NOTHING
RETURNING dead_letter_id;
