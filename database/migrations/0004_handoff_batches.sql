-- The outbox holds one row per stored batch instead of two per accepted
-- registration: its ids, relayed to both verification streams by one script
-- call whose single marker (per row) makes a repeat a no-op. Two outbox rows
-- per registration, inserted and deleted again, were a third of the drain's
-- PostgreSQL time and left most of its dead space.
CREATE TABLE verification_handoffs (
    handoff_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition        smallint    NOT NULL,
    registration_ids uuid[]      NOT NULL,  -- accepted, each in exactly one row
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX verification_handoffs_age ON verification_handoffs (created_at);

-- Rows left in the old outbox become one hand-off per partition. Their jobs
-- may have reached Redis already (a crash between the relay and the delete):
-- the new marker does not know the old ones, so such a job can be added a
-- second time, which the verification workers' state guards make a no-op.
INSERT INTO verification_handoffs (partition, registration_ids, created_at)
SELECT partition, array_agg(DISTINCT registration_id), min(created_at)
  FROM verification_outbox
 GROUP BY partition;

DROP TABLE verification_outbox;
