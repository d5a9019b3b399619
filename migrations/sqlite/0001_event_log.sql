-- The append-only event log, its stream heads, and the ledger-side tables that
-- are written in the same transaction as the events. SQLite has one writer at
-- a time, so positions commit in order and transaction_id stays 0.

CREATE TABLE streams (
    stream_id  TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    last_hash  BLOB NOT NULL
);

CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id  INTEGER NOT NULL DEFAULT 0,
    event_id        BLOB NOT NULL UNIQUE,
    stream_id       TEXT NOT NULL,
    stream_version  INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    recorded_at     TEXT NOT NULL,
    hash            BLOB NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_by_type ON events (event_type, position);

CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the events table is append-only: UPDATE refused'); END;
CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the events table is append-only: DELETE refused'); END;

CREATE TABLE reservations (
    kind        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    holder      TEXT NOT NULL,
    expires_at  TEXT,
    PRIMARY KEY (kind, scope, key)
);
CREATE INDEX reservations_by_holder ON reservations (holder);

CREATE TABLE invitation_sends (
    account_id     BLOB NOT NULL,
    inviter        TEXT NOT NULL,
    invitation_id  BLOB NOT NULL,
    sent_at        TEXT NOT NULL
);
CREATE INDEX invitation_sends_window ON invitation_sends (account_id, inviter, sent_at);

CREATE TABLE person_keys (
    person_id   BLOB PRIMARY KEY,
    email_hash  TEXT NOT NULL UNIQUE,
    key         BLOB NOT NULL,
    created_at  TEXT NOT NULL
);
