-- Where each worker stands in the global order (written with its effects).
CREATE TABLE worker_checkpoints (
    worker          TEXT PRIMARY KEY,
    transaction_id  TEXT NOT NULL,
    position        BIGINT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- One row per email a triggering event asked for: the dedupe record that
-- makes redeliveries and restarts send each email at most once.
CREATE TABLE mail_sends (
    event_id       UUID NOT NULL,
    kind           TEXT NOT NULL,
    invitation_id  UUID,
    message_id     TEXT NOT NULL,
    status         TEXT NOT NULL,
    attempts       INTEGER NOT NULL,
    last_error     TEXT,
    claimed_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ,
    PRIMARY KEY (event_id, kind)
);

-- Deadlines of pending invitations, kept by the expiry worker.
CREATE TABLE expiry_deadlines (
    invitation_id  UUID PRIMARY KEY,
    expires_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX expiry_deadlines_due ON expiry_deadlines (expires_at);
