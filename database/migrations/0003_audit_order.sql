-- GET /admin/v1/audit lists the audit log newest first, by the Redis entry id
-- ("<ms>-<seq>") it was archived from: the order the entries were written in,
-- whatever clock wrote `at`. Indexed so a page is a short index scan.
CREATE INDEX audit_log_entry_order ON audit_log (
    (split_part(stream_id, '-', 1)::bigint) DESC,
    (split_part(stream_id, '-', 2)::bigint) DESC
);
