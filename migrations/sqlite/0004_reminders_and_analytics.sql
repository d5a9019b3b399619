-- When the expiry worker reminds a pending invitee (NULL: no reminder due).
ALTER TABLE expiry_deadlines ADD COLUMN remind_at TEXT;
CREATE INDEX expiry_deadlines_remind ON expiry_deadlines (remind_at);

-- The analytics worker's own tables, built from the events it consumes.
-- Events it has counted (redeliveries count once).
CREATE TABLE analytics_seen (
    event_id  BLOB PRIMARY KEY
);

-- What the funnel needs to remember about each invitation.
CREATE TABLE analytics_invitations (
    invitation_id  BLOB PRIMARY KEY,
    account_id     BLOB NOT NULL,
    sent_at        TEXT NOT NULL,
    delivered      INTEGER NOT NULL DEFAULT 0,
    opened         INTEGER NOT NULL DEFAULT 0,
    clicked        INTEGER NOT NULL DEFAULT 0
);

-- Per account and UTC day: how many invitations reached each step that day.
CREATE TABLE analytics_daily (
    account_id  BLOB NOT NULL,
    day         TEXT NOT NULL,
    invited     INTEGER NOT NULL DEFAULT 0,
    delivered   INTEGER NOT NULL DEFAULT 0,
    opened      INTEGER NOT NULL DEFAULT 0,
    clicked     INTEGER NOT NULL DEFAULT 0,
    accepted    INTEGER NOT NULL DEFAULT 0,
    expired     INTEGER NOT NULL DEFAULT 0,
    revoked     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, day)
);

-- Each acceptance with the time it took (for the median and p90).
CREATE TABLE analytics_acceptances (
    invitation_id     BLOB PRIMARY KEY,
    account_id        BLOB NOT NULL,
    day               TEXT NOT NULL,
    seconds_to_accept INTEGER NOT NULL
);
CREATE INDEX analytics_acceptances_day ON analytics_acceptances (account_id, day);
