"""The schema, as an ordered list of named migrations.

Each step runs once, in its own ``BEGIN IMMEDIATE`` transaction, and records itself in
``schema_migrations``; ``PRAGMA user_version`` mirrors the count so a newer file is refused
before any SQL touches it. Append new steps; never edit a step that has shipped.

Times are Unix seconds (REAL): cheap to compare and index, formatted only for display.
"""

from __future__ import annotations

from dataclasses import dataclass

from .states import LIVE_SQL

APPLICATION_ID = 0x53454E44  # "SEND": marks a file as ours

_INITIAL = f"""
CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
);
CREATE TABLE campaigns (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    paused     TEXT               -- reason, when an operator paused this campaign
);
CREATE TABLE recipients (
    id    INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name  TEXT,
    tz    TEXT                    -- IANA time zone, for per-recipient send windows
);
-- The hot rows: claims rewrite these, so they stay slim (bodies live in message_bodies).
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY,
    campaign_id  INTEGER NOT NULL REFERENCES campaigns(id),
    recipient_id INTEGER NOT NULL REFERENCES recipients(id),
    dedupe_key   TEXT NOT NULL UNIQUE,
    message_id   TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL DEFAULT 'scheduled'
                 CHECK (state IN ('scheduled','sending','sent','failed','unknown','cancelled','expired')),
    due_at       REAL NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 1 CHECK (priority IN (0, 1, 2)),  -- high, normal, low
    expires_at   REAL,
    defer_reason TEXT,            -- why a due message was pushed back by a sending policy
    attempts     INTEGER NOT NULL DEFAULT 0,
    claim_token  TEXT,
    worker       TEXT,
    lease_until  REAL,
    last_reply   TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE INDEX messages_due ON messages(priority, due_at, id) WHERE state = 'scheduled';
CREATE INDEX messages_expiry ON messages(expires_at) WHERE state = 'scheduled' AND expires_at IS NOT NULL;
CREATE INDEX messages_deferred ON messages(defer_reason) WHERE state = 'scheduled' AND defer_reason IS NOT NULL;
CREATE INDEX messages_lease ON messages(lease_until) WHERE state = 'sending';
CREATE INDEX messages_state_updated ON messages(state, updated_at);
CREATE INDEX messages_recipient ON messages(recipient_id, campaign_id);
CREATE TABLE message_bodies (
    message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    from_addr  TEXT NOT NULL,
    from_name  TEXT,
    to_name    TEXT,
    subject    TEXT NOT NULL,
    body_text  TEXT NOT NULL,
    body_html  TEXT
);
-- One row per attempt. status: sending (claimed, in flight), sent, retry, failed, unknown,
-- released (claim returned unstarted), requeued (an operator retired an unknown attempt).
CREATE TABLE send_log (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    dedupe_key  TEXT NOT NULL,
    mid         TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    sender      TEXT NOT NULL DEFAULT '',  -- the From account, for rate limits
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    claim_token TEXT NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN ('sending','sent','retry','failed','unknown','released','requeued')),
    claimed_at  REAL NOT NULL,
    finished_at REAL,
    smtp_code   INTEGER,
    smtp_reply  TEXT
);
CREATE UNIQUE INDEX send_log_live_message ON send_log(message_id)
    WHERE status IN {LIVE_SQL};
CREATE UNIQUE INDEX send_log_live_dedupe ON send_log(dedupe_key)
    WHERE status IN {LIVE_SQL};
CREATE INDEX send_log_message ON send_log(message_id, id);
CREATE INDEX send_log_mid ON send_log(mid);
CREATE INDEX send_log_claimed ON send_log(claimed_at);
CREATE INDEX send_log_recipient ON send_log(recipient, campaign, claimed_at);
CREATE INDEX send_log_sender ON send_log(sender, claimed_at);
CREATE TABLE workers (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    host         TEXT NOT NULL,
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at   REAL
);
CREATE INDEX workers_heartbeat ON workers(heartbeat_at);
CREATE INDEX workers_running ON workers(id) WHERE stopped_at IS NULL;
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    at         REAL NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    message_id INTEGER,
    detail     TEXT
);
CREATE INDEX audit_message ON audit(message_id);
CREATE TABLE flags (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    set_at REAL NOT NULL,
    set_by TEXT NOT NULL
);
-- Per-state counts kept by triggers so status and the monitor never count a million rows.
CREATE TABLE state_counts (
    state TEXT PRIMARY KEY,
    n     INTEGER NOT NULL
);
INSERT INTO state_counts(state, n)
    VALUES ('scheduled',0),('sending',0),('sent',0),('failed',0),('unknown',0),('cancelled',0),
           ('expired',0);
CREATE TRIGGER messages_count_insert AFTER INSERT ON messages BEGIN
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER messages_count_update AFTER UPDATE OF state ON messages
    WHEN OLD.state <> NEW.state BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
    UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER messages_count_delete AFTER DELETE ON messages BEGIN
    UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
END;
"""

# What actually arrived, read from a mailbox (a sink capture, a BCC archive, an exported Sent
# folder): one row per copy and recipient. Message-IDs are deliberately not unique here, since
# duplicates are what the report looks for. A copy is identified by the SHA-256 of its raw bytes,
# the recipient, and its ordinal among byte-identical copies in one scan: reading a mailbox twice
# adds nothing, yet a message really delivered twice (even byte for byte) keeps both rows.
_OBSERVATIONS = """
CREATE TABLE observations (
    id          INTEGER PRIMARY KEY,
    mid         TEXT,              -- normalised Message-ID, NULL when the copy had none
    recipient   TEXT NOT NULL,     -- lower-cased, '' when no recipient header was found
    date        REAL,              -- the Date header, NULL when missing or malformed
    at          REAL NOT NULL,     -- time used for windows: date, else delivery time, else observed_at
    subject     TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL,     -- 'maildir:/abs/path' or 'mbox:/abs/path'
    observed_at REAL NOT NULL,
    fingerprint TEXT NOT NULL,     -- sha256 of the raw copy
    copy        INTEGER NOT NULL DEFAULT 1,
    row_id      INTEGER,           -- the queue row (messages.id) this copy traces back to
    traced_by   TEXT CHECK (traced_by IN ('message-id', 'recipient+time')),
    UNIQUE (fingerprint, recipient, copy)
);
CREATE INDEX observations_at ON observations(at);
CREATE INDEX observations_mid ON observations(mid, recipient);
CREATE INDEX observations_source ON observations(source, at);
CREATE INDEX observations_row ON observations(row_id);
"""

# Recipient + campaign pairs that have more than one queued message. Only such a pair can show
# up in the report as "one recipient + campaign receiving more than one distinct message" from
# the SendLog (one live attempt per message, one Message-ID per message), so the report checks
# these few pairs instead of every attempt in its window (748 ms -> under 1 ms at a million rows).
# Kept at enqueue by a trigger, so the claim path pays nothing; the insert backfills old queues.
_SHARED_PAIRS = """
CREATE TABLE shared_pairs (
    recipient_id INTEGER NOT NULL,
    campaign_id  INTEGER NOT NULL,
    PRIMARY KEY (recipient_id, campaign_id)
) WITHOUT ROWID;
CREATE TRIGGER messages_shared_pair AFTER INSERT ON messages
    WHEN EXISTS (SELECT 1 FROM messages m WHERE m.recipient_id = NEW.recipient_id
                    AND m.campaign_id = NEW.campaign_id AND m.id <> NEW.id) BEGIN
    INSERT OR IGNORE INTO shared_pairs(recipient_id, campaign_id) VALUES (NEW.recipient_id, NEW.campaign_id);
END;
INSERT OR IGNORE INTO shared_pairs(recipient_id, campaign_id)
    SELECT recipient_id, campaign_id FROM messages GROUP BY recipient_id, campaign_id HAVING count(*) > 1;
"""



@dataclass(frozen=True, slots=True)
class Rebuild:
    """A migration step SQLite cannot do with ``ALTER TABLE``: change a constraint of ``table``.

    Run by ``sender.store.db`` as the documented 12-step table rebuild
    (https://www.sqlite.org/lang_altertable.html#otheralter), with foreign keys off: the table's
    current ``CREATE TABLE`` text with ``old`` replaced by ``new`` becomes ``{table}_new``, the
    rows are copied, the old table dropped, the new one renamed, and every index and trigger the
    old table had (whatever migrations, earlier or later merged, created them) recreated from
    ``sqlite_master``. ``then`` runs afterwards, in the same transaction.
    """

    table: str
    old: str
    new: str
    then: str = ""


# Deliverability (docs/deliverability.md). The suppression list is global, not per From domain:
# an unsubscribe, a complaint or a hard bounce is about the person's mailbox, and a second brand
# of the same team mailing someone who opted out is exactly what the list must prevent.
# ``messages.state`` gains ``suppressed`` (the claim found the recipient on the list) and
# ``bounced`` (a DSN with a 5.x.x status arrived after ``sent``); the SendLog keeps ``sent`` for a
# bounced attempt (it was handed over), so the dedupe indexes still refuse a resend.
_SUPPRESSION_TABLE = """
CREATE TABLE IF NOT EXISTS suppressions (
    email  TEXT PRIMARY KEY COLLATE NOCASE,
    reason TEXT NOT NULL CHECK (reason IN ('unsubscribed','bounced','complained','manual')),
    at     REAL NOT NULL,
    source TEXT NOT NULL DEFAULT ''   -- who or what added it: an operator, a DSN's row, a token
) WITHOUT ROWID;
INSERT OR IGNORE INTO state_counts(state, n) VALUES ('suppressed', 0), ('bounced', 0);
"""

_SUPPRESSION_STATES = Rebuild(
    "messages",
    old="CHECK (state IN ('scheduled','sending','sent','failed','unknown','cancelled','expired'))",
    new="CHECK (state IN ('scheduled','sending','sent','failed','unknown','cancelled','expired',"
        "'suppressed','bounced'))",
    then=_SUPPRESSION_TABLE,
)

@dataclass(frozen=True, slots=True)
class AddColumns:
    """``ALTER TABLE table ADD COLUMN`` for each (name, type) the table lacks: a step that is safe
    to apply twice (SQLite has no ``ADD COLUMN IF NOT EXISTS``)."""

    table: str
    columns: tuple[tuple[str, str], ...]


# Reply-To and extra headers (a JSON list of [name, value]), validated at enqueue (sender.headers).
_EXTRA_HEADERS = AddColumns("message_bodies", (("reply_to", "TEXT"), ("headers", "TEXT")))

# Temporary failures (DSN 4.x.x) found by observe, one row per report copy (re-reading a mailbox
# counts nothing twice): enough of them within a period suppress the address (sender.feedback).
_SOFT_BOUNCES = """
CREATE TABLE IF NOT EXISTS soft_bounces (
    fingerprint TEXT PRIMARY KEY,
    email       TEXT NOT NULL COLLATE NOCASE,
    row_id      INTEGER,
    status      TEXT NOT NULL,
    at          REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS soft_bounces_email ON soft_bounces(email, at);
"""

# Attachments, content-addressed (sender.attachments): one copy per distinct file, whatever the
# number of rows that link it. Kept out of the claimed rows, like the bodies.
_ATTACHMENTS = """
CREATE TABLE IF NOT EXISTS attachments (
    sha256 TEXT PRIMARY KEY,
    size   INTEGER NOT NULL,
    bytes  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS message_attachments (
    message_id   INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    sha256       TEXT NOT NULL REFERENCES attachments(sha256),
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;
"""

# How many attachments a body has, read by the claim with the body: rows without any (the
# common case) cost the claim no look-up in message_attachments.
_ATTACHMENT_COUNT = AddColumns("message_bodies", (("attachments", "INTEGER NOT NULL DEFAULT 0"),))

# The monitor's search (``sender.store.selection``): a recipient fragment through a trigram index over
# the addresses (kept by triggers at enqueue, never touched by a claim); a campaign's messages
# by state (counts and pages of "failed in campaign X" read the index alone; measured cost on
# the claim path: about 1 %, 0.663 s -> 0.670 s for 9,600 claims and outcomes); and when each
# mailbox was last read. IF NOT EXISTS: a file rolled back to an older version by hand (as the
# upgrade tests do) keeps these objects, and upgrading it again must not fail on them.
_SEARCH_INDEXES = """
CREATE VIRTUAL TABLE IF NOT EXISTS recipients_fts USING fts5(email, content='recipients', content_rowid='id',
                                               tokenize='trigram');
CREATE TRIGGER IF NOT EXISTS recipients_fts_insert AFTER INSERT ON recipients BEGIN
    INSERT INTO recipients_fts(rowid, email) VALUES (NEW.id, NEW.email);
END;
CREATE TRIGGER IF NOT EXISTS recipients_fts_delete AFTER DELETE ON recipients BEGIN
    INSERT INTO recipients_fts(recipients_fts, rowid, email) VALUES ('delete', OLD.id, OLD.email);
END;
CREATE TRIGGER IF NOT EXISTS recipients_fts_update AFTER UPDATE OF email ON recipients BEGIN
    INSERT INTO recipients_fts(recipients_fts, rowid, email) VALUES ('delete', OLD.id, OLD.email);
    INSERT INTO recipients_fts(rowid, email) VALUES (NEW.id, NEW.email);
END;
INSERT INTO recipients_fts(recipients_fts) VALUES ('rebuild');
CREATE INDEX IF NOT EXISTS messages_campaign ON messages(campaign_id, state);
CREATE INDEX IF NOT EXISTS observations_source_seen ON observations(source, observed_at);
"""

# Each worker's own --heartbeat, so "presumed dead after three missed heartbeats" holds for a
# daemon run with a long interval too (NULL for rows written before: the reader's default).
_WORKER_HEARTBEAT = AddColumns("workers", (("heartbeat_every", "REAL"),))

# The monitor's per-campaign counts of the queue (``sender.store.views.campaign_queues``), exact
# and read from this index alone: the scheduled messages only (a claim removes its entry, as from
# ``messages_due``); ``state`` is a column too, or SQLite 3.40 reads each table row to check it.
# At a million rows with 40,000 scheduled: 113 ms (``messages_state_updated`` and every row) ->
# 13 ms.
_CAMPAIGN_DUE = """
CREATE INDEX IF NOT EXISTS messages_campaign_due ON messages(campaign_id, state, due_at)
    WHERE state = 'scheduled';
"""

MIGRATIONS: list[tuple[str, str | Rebuild | AddColumns]] = [
    ("0001_initial", _INITIAL),
    ("0002_observations", _OBSERVATIONS),
    ("0003_shared_pairs", _SHARED_PAIRS),
    ("0004_monitor_search", _SEARCH_INDEXES),
    ("0005_suppressions_and_bounce_states", _SUPPRESSION_STATES),
    ("0006_message_reply_to_and_headers", _EXTRA_HEADERS),
    ("0007_soft_bounces", _SOFT_BOUNCES),
    ("0008_attachments", _ATTACHMENTS),
    ("0009_message_attachment_count", _ATTACHMENT_COUNT),
    ("0010_worker_heartbeat_interval", _WORKER_HEARTBEAT),
    ("0011_campaign_due_index", _CAMPAIGN_DUE),
]
