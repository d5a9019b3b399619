-- Sign-in sessions: only a SHA-256 hash of the bearer token is kept.
CREATE TABLE sessions (
    token_hash    TEXT PRIMARY KEY,
    user_id       BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- First answers to POST requests that carried an Idempotency-Key.
CREATE TABLE idempotency_keys (
    key_hash      TEXT PRIMARY KEY,
    request_hash  TEXT NOT NULL,
    status        INTEGER,
    body          BLOB,
    created_at    TEXT NOT NULL
);
