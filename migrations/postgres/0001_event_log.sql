-- The append-only event log, its stream heads, and the ledger-side tables that
-- are written in the same transaction as the events.

-- One row per stream: its current version and the hash of its last event.
-- Appends lock this row (SELECT ... FOR UPDATE) so concurrent writers to one
-- stream are serialised and a stale expected version is a clean conflict.
CREATE TABLE streams (
    stream_id  TEXT PRIMARY KEY,
    version    BIGINT NOT NULL,
    last_hash  BYTEA NOT NULL
);

-- The log. `position` comes from an identity sequence and therefore commits
-- out of order under concurrent writers; `transaction_id` (xid8) lets readers
-- stop below the oldest in-flight transaction and page with the compound
-- cursor (transaction_id, position), so no late commit is ever skipped.
CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  XID8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id        UUID NOT NULL UNIQUE,
    stream_id       TEXT NOT NULL,
    stream_version  BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    hash            BYTEA NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_global_order ON events (transaction_id, position);
CREATE INDEX events_by_type ON events (event_type, position);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- Set-based rules (one user per email, one pending invitation per account and
-- email) are claimed here in the same transaction as the events that need them.
CREATE TABLE reservations (
    kind        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    holder      TEXT NOT NULL,
    expires_at  TIMESTAMPTZ,
    PRIMARY KEY (kind, scope, key)
);
CREATE INDEX reservations_by_holder ON reservations (holder);

-- Invitations sent per inviter, for the rolling daily quota.
CREATE TABLE invitation_sends (
    account_id     UUID NOT NULL,
    inviter        TEXT NOT NULL,
    invitation_id  UUID NOT NULL,
    sent_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX invitation_sends_window ON invitation_sends (account_id, inviter, sent_at);

-- Per-person encryption keys, kept outside the log. Deleting a row erases the
-- person: their sealed emails and names in the log can no longer be read.
CREATE TABLE person_keys (
    person_id   UUID PRIMARY KEY,
    email_hash  TEXT NOT NULL UNIQUE,
    key         BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
