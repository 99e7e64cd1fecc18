-- The email address sealed a second time, on its own, under an address key
-- (queueing/envelope.py): the email worker reads these two columns and holds
-- only the address keys, so it can open the address and nothing else.
-- NULL in rows an older door sealed (version 1 envelopes) until
-- `gelombang keys reseal` fills them in from the full blob. Both or neither.
-- Adding nullable columns without a default rewrites no rows.
ALTER TABLE registrations
    ADD COLUMN address_key_id text,
    ADD COLUMN sealed_address bytea,
    ADD CONSTRAINT registrations_address_sealed_whole
        CHECK ((address_key_id IS NULL) = (sealed_address IS NULL));
