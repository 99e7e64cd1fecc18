-- Fencing of the drain: the highest lease epoch that has written to each
-- partition (workers/runtime/leases.py). Every batch's statement raises it to
-- its own epoch or, when a newer holder has already written, is refused and
-- writes nothing; the row lock it takes orders a partition's writers.
CREATE TABLE drain_fences (
    partition smallint PRIMARY KEY,
    epoch     bigint   NOT NULL
);
