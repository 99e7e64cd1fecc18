-- The verification streams hold a bounded window of jobs; the rest wait here.
-- A hand-off row is relayed one kind at a time (email jobs flow while the
-- ministry's small capacity holds the NIK jobs back), so each kind's relay is
-- recorded, and the row goes once both are relayed.
ALTER TABLE verification_handoffs
    ADD COLUMN email_relayed boolean NOT NULL DEFAULT false,
    ADD COLUMN nik_relayed   boolean NOT NULL DEFAULT false;
-- The refill takes a partition's oldest rows first.
CREATE INDEX verification_handoffs_partition ON verification_handoffs (partition, handoff_id);
