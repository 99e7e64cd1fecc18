-- Queries of the verification workers (email, NIK) and of the door's
-- verify-email link. Each state change is guarded by the state it leaves, so
-- a repeated job or click changes nothing and counts nothing twice.

-- name: registration_for_job
SELECT state::text, email_verification::text, nik_verification::text, nik_hash, key_id,
       sealed
  FROM registrations
 WHERE registration_id = $1;

-- name: cached_nik_outcome
SELECT outcome::text FROM nik_checks WHERE nik_hash = $1;

-- name: cache_nik_outcome
INSERT INTO nik_checks (nik_hash, outcome) VALUES ($1, $2::nik_verification)
    ON CONFLICT (nik_hash) DO NOTHING;

-- name: set_nik_outcome
UPDATE registrations
   SET nik_verification = $2::nik_verification, updated_at = now()
 WHERE registration_id = $1 AND nik_verification = 'pending'
RETURNING 1;

-- name: count_email_attempt
-- Before each send: a crash after it leaves a trace of the try.
INSERT INTO email_deliveries (registration_id, attempts, last_error) VALUES ($1, 1, $2)
    ON CONFLICT (registration_id) DO UPDATE
       SET attempts = email_deliveries.attempts + 1, last_error = EXCLUDED.last_error
RETURNING attempts;

-- name: note_email_error
UPDATE email_deliveries SET last_error = $2 WHERE registration_id = $1;

-- name: set_email_sent
UPDATE registrations
   SET email_verification = 'sent', updated_at = now()
 WHERE registration_id = $1 AND email_verification = 'pending'
RETURNING 1;

-- name: note_email_sent
UPDATE email_deliveries SET sent_at = now(), last_error = NULL WHERE registration_id = $1;

-- name: set_email_failed
UPDATE registrations
   SET email_verification = 'failed', updated_at = now()
 WHERE registration_id = $1 AND email_verification = 'pending'
RETURNING 1;

-- name: set_email_verified
-- From `failed` too: a message the relay bounced late may still have arrived.
UPDATE registrations
   SET email_verification = 'verified', updated_at = now()
 WHERE registration_id = $1 AND email_verification IN ('pending', 'sent', 'failed')
RETURNING 1;

-- name: email_state
SELECT email_verification::text FROM registrations WHERE registration_id = $1;
