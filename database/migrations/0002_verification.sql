-- Verification: blacklist sources, the NIK check cache, email verification times.

-- A NIK can be listed by several sources (state-company boards, Taspen,
-- Asabri); a source is re-imported as a whole, replacing its old rows.
ALTER TABLE nik_blacklist ADD COLUMN source text NOT NULL DEFAULT 'manual';
ALTER TABLE nik_blacklist ALTER COLUMN reason SET DEFAULT '';
ALTER TABLE nik_blacklist DROP CONSTRAINT nik_blacklist_pkey;
ALTER TABLE nik_blacklist ADD PRIMARY KEY (nik_hash, source);
CREATE INDEX nik_blacklist_source ON nik_blacklist (source);

-- The ministry's answer per NIK hash: the same NIK is never checked twice.
CREATE TABLE nik_checks (
    nik_hash   bytea            PRIMARY KEY,
    outcome    nik_verification NOT NULL,
    checked_at timestamptz      NOT NULL DEFAULT now()
);

-- Verification emails: how often one was tried, and when it was sent. The
-- token itself is never stored: it is signed, and carries the registration
-- id and its expiry.
CREATE TABLE email_deliveries (
    registration_id uuid        PRIMARY KEY REFERENCES registrations (registration_id),
    attempts        integer     NOT NULL DEFAULT 0,
    sent_at         timestamptz,
    last_error      text
);
