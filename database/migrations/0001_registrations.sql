-- Registrations and everything the drain writes beside them.
--
-- PostgreSQL never holds plaintext personal data: `sealed` is the AES-256-GCM
-- blob made by the door (opened only in memory by the verification workers),
-- and NIK and email are HMAC-SHA256 hashes under a key PostgreSQL never sees.

CREATE TYPE registration_state AS ENUM ('accepted', 'duplicate', 'ineligible');
CREATE TYPE email_verification AS ENUM ('pending', 'sent', 'verified', 'failed', 'skipped');
CREATE TYPE nik_verification AS ENUM (
    'pending', 'verified', 'mismatch', 'not_found', 'failed', 'skipped'
);
CREATE TYPE verification_kind AS ENUM ('email', 'nik');

-- Fixed-width columns first, widest first, so no alignment padding is wasted
-- on 42 million rows; the variable-width ones last.
CREATE TABLE registrations (
    registration_id    uuid               PRIMARY KEY,  -- v7: sorts by intake time
    received_at        timestamptz        NOT NULL,     -- when the door admitted it
    stored_at          timestamptz        NOT NULL DEFAULT now(),
    updated_at         timestamptz        NOT NULL DEFAULT now(),
    state              registration_state NOT NULL,
    email_verification email_verification NOT NULL,
    nik_verification   nik_verification   NOT NULL,
    nik_hash           bytea              NOT NULL,
    email_hash         bytea              NOT NULL,
    key_id             text               NOT NULL,     -- the sealing key's id
    sealed             bytea              NOT NULL
);

-- The first registration of a NIK or an email is the one that is not a
-- duplicate: unique over those rows only, so a duplicate check is one index
-- probe whatever the table's size, and two drains racing on the same NIK
-- cannot both store it as accepted.
CREATE UNIQUE INDEX registrations_first_nik
    ON registrations (nik_hash) WHERE state <> 'duplicate';
CREATE UNIQUE INDEX registrations_first_email
    ON registrations (email_hash) WHERE state <> 'duplicate';

-- NIKs that may not register (filled by the verification workers and ops).
CREATE TABLE nik_blacklist (
    nik_hash bytea       PRIMARY KEY,
    reason   text        NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: a verification job is written in the same
-- transaction as its registration, then relayed to a Redis stream and
-- deleted. The relay's Redis side is idempotent per job, so relaying a row
-- twice (a crash between XADD and DELETE) still hands the job off once.
CREATE TABLE verification_outbox (
    registration_id uuid              NOT NULL,
    kind            verification_kind NOT NULL,
    partition       smallint          NOT NULL,
    created_at      timestamptz       NOT NULL DEFAULT now(),
    PRIMARY KEY (registration_id, kind)
);
CREATE INDEX verification_outbox_age ON verification_outbox (created_at);

-- Funnel counters, kept in the transactions that change what they count.
-- Each drain consumer adds to its own shard, so concurrent batches do not
-- queue on one row lock; a read sums the shards (a few hundred rows at most).
CREATE TABLE funnel_counts (
    name  text     NOT NULL,
    shard smallint NOT NULL,
    value bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (name, shard)
);

-- Stream entries that could not be stored: undecodable, or delivered too
-- often. The payload is the entry as queued (sealed), for replay after a fix.
CREATE TABLE dead_letters (
    dead_letter_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream         text        NOT NULL,
    entry_id       text        NOT NULL,
    reason         text        NOT NULL,
    deliveries     integer     NOT NULL,
    payload        bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, entry_id)
);

-- Admin actions (who, what, when), archived from the Redis audit stream.
CREATE TABLE audit_log (
    audit_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id text        NOT NULL UNIQUE,  -- the Redis entry id: archiving is idempotent
    at        timestamptz NOT NULL,
    actor     text        NOT NULL,
    source    text        NOT NULL,
    action    text        NOT NULL,
    changes   jsonb       NOT NULL
);
