-- Queries of `gelombang dead-letters` (workers/dead_letters.py).

-- name: forget_dead_letters
-- The records of intake dead letters replayed or dropped: $1 the streams,
-- $2 the entry ids, pairwise (a row is unique per stream entry).
DELETE FROM dead_letters AS d
 USING unnest($1::text[], $2::text[]) AS gone (stream, entry_id)
 WHERE d.stream = gone.stream
   AND d.entry_id = gone.entry_id;
