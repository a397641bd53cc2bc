"""Generate ``sample.db``: a small demo queue that shows every state and the seed's incident.

    python scripts/make_sample.py [--out sample.db]

Deterministic: a fixed seed and a fixed clock (the sample's "now" is Monday 2025-03-10 09:00
UTC), so the same SQLite library writes the same bytes and any library writes the same content
(``tests/test_demo.py`` regenerates it and compares). Run it again after a schema change.

What is in it, on example.com / example.pl addresses only:

* three campaigns and a few hundred recipients; a week of history in SendLog (sends during
  working hours, some after a 451 retry, some 550 failures);
* every state: scheduled (some due, which the demo sends; some in 2035, which it never will),
  sending (a stale claim: worker ``mail-2`` stopped heartbeating, its lease long expired),
  sent, failed, unknown (a connection lost during DATA; one of them was seen in the BCC
  archive, so ``reconcile`` can settle it), cancelled, expired;
* an ambiguous send an operator requeued that had in fact arrived: the BCC archive holds its
  Message-ID twice (``repeated_message_ids``);
* the incident, reproduced as it happened: three overlapping runs of the old scheduler each
  built their own Message-ID for one queued row and delivered it at 07:46:00; one SendLog row
  survived. The lead forwarded the three copies; they are stored as observations.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sender.store.db import Database, open_db  # noqa: E402

SEED = 20250310
BASE = datetime(2025, 3, 10, 9, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
FUTURE = datetime(2035, 1, 6, 9, 0, tzinfo=UTC).timestamp()
INCIDENT = datetime(2025, 3, 10, 7, 46, tzinfo=UTC).timestamp()
FROM, FROM_NAME, DOMAIN = "team@example.com", "Example Team", "example.com"
FIRST = ("anna", "piotr", "maria", "jan", "ewa", "tomasz", "kasia", "marek", "olga", "adam",
         "zofia", "pawel", "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
CAMPAIGNS = {
    "welcome-series": ("Welcome, {name}", "Hi {name},\n\nthanks for signing up. Here is how to start."),
    "spring-webinar": ("Your webinar materials", "Hi {name},\n\nhere are the slides you asked for."),
    "product-update": ("What is new in March", "Hi {name},\n\nthree things we shipped this month."),
}
WORKERS = [  # id, name, pid, started, heartbeat, stopped
    (1, "mail-1", 4101, BASE - 7 * DAY, BASE - 240.0, BASE - 240.0),
    (2, "mail-2", 4102, BASE - 2 * DAY, BASE - 3000.0, None),
    (3, "mail-3", 4103, BASE - 7 * DAY, BASE - 120.0, BASE - 120.0),
]


class Sample:
    """Builds the rows in memory, in a fixed order, with one seeded RNG."""

    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.recipients: list[tuple[int, str, str]] = []
        self.messages: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.observations: list[dict[str, Any]] = []
        self.audit: list[tuple[float, str, str, int | None, str]] = []
        self.suppressions: list[tuple[str, str, float, str]] = []

    def hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def mid(self, row: int) -> str:
        return f"<{row}.{self.hex(16)}@{DOMAIN}>"

    def work_time(self, day: int) -> float:
        """A moment during working hours (08:00-17:00 UTC) ``day`` days before the sample's now
        (which is 09:00, so today's hours are 08:00-08:58)."""
        start = BASE - day * DAY - 3600.0
        return round(start + self.rng.uniform(0, 9 * 3600.0 if day else 3480.0), 3)

    def add_recipients(self, n: int) -> None:
        for i in range(1, n + 1):
            first = FIRST[(i - 1) % len(FIRST)]
            domain = "example.pl" if i % 3 == 0 else "example.com"
            self.recipients.append((i, f"{first}.{i:03d}@{domain}", f"{first.title()} {chr(65 + i % 26)}."))

    def message(self, campaign: int, name: str, rcpt: int, *, created: float, due: float,
                state: str, updated: float, attempts: int = 0, reply: str | None = None,
                worker: str | None = None, token: str | None = None,
                lease: float | None = None, expires: float | None = None) -> dict[str, Any]:
        row = len(self.messages) + 1
        _rid, email, display = self.recipients[rcpt - 1]
        subject, body = CAMPAIGNS[name]
        first = display.split()[0]
        msg = {"id": row, "campaign_id": campaign, "recipient_id": rcpt,
               "dedupe_key": f"{name}\x1f{email.lower()}", "message_id": self.mid(row), "state": state,
               "due_at": due, "attempts": attempts, "claim_token": token, "worker": worker,
               "lease_until": lease, "last_reply": reply, "created_at": created, "updated_at": updated,
               "expires_at": expires,
               "email": email, "campaign": name, "subject": subject.format(name=first),
               "body": body.format(name=first), "to_name": display}
        self.messages.append(msg)
        return msg

    def attempt(self, msg: dict[str, Any], status: str, at: float, *, worker: int, code: int | None,
                reply: str | None, finished: float | None = None, attempt: int = 1) -> str:
        token = f"{worker}.{self.hex(12)}"
        self.log.append({"message_id": msg["id"], "dedupe_key": msg["dedupe_key"],
                         "mid": msg["message_id"], "recipient": msg["email"],
                         "campaign": msg["campaign"], "attempt": attempt,
                         "worker": WORKERS[worker - 1][1], "claim_token": token, "status": status,
                         "claimed_at": at, "finished_at": finished, "smtp_code": code,
                         "smtp_reply": reply})
        return token

    def sent(self, msg: dict[str, Any], at: float, worker: int, attempt: int = 1) -> None:
        done = round(at + self.rng.uniform(0.05, 0.6), 3)
        self.attempt(msg, "sent", at, worker=worker, code=250, attempt=attempt,
                     reply=f"2.0.0 Ok: queued as {self.hex(10).upper()}", finished=done)
        msg.update(state="sent", attempts=attempt, updated_at=done,
                   last_reply="250 2.0.0 Ok: queued")

    def fail(self, msg: dict[str, Any], at: float, worker: int, code: int, reply: str) -> None:
        done = round(at + 0.2, 3)
        self.attempt(msg, "failed", at, worker=worker, code=code, reply=reply, finished=done)
        msg.update(state="failed", attempts=1, updated_at=done, last_reply=f"{code} {reply}")

    def observe(self, msg: dict[str, Any], mid: str, at: float, source: str, copy: int = 1) -> None:
        self.observations.append({"mid": mid, "recipient": msg["email"].lower(), "date": at, "at": at,
                                  "subject": msg["subject"], "source": source,
                                  "observed_at": BASE - 600.0, "fingerprint": self.hex(64),
                                  "copy": copy, "row_id": msg["id"], "traced_by": "message-id"})


QUEUED = BASE - 8 * DAY


def build() -> Sample:
    """The whole sample, one campaign at a time, in a fixed order."""
    s = Sample()
    s.add_recipients(300)
    _welcome_series(s)
    _spring_webinar(s)
    _product_update(s)
    return s


def _welcome_series(s: Sample) -> None:
    """Recipients 1-120, sent over the week; a few bounced, some after a 451 retry."""
    for rcpt in range(1, 121):
        at = s.work_time(s.rng.randint(1, 7))
        msg = s.message(1, "welcome-series", rcpt, created=QUEUED, due=round(at - 30, 3),
                        state="scheduled", updated=QUEUED)
        if rcpt % 29 == 0:
            s.fail(msg, at, 1, 550, "5.1.1 Recipient address rejected: User unknown")
        elif rcpt % 17 == 0:
            s.attempt(msg, "retry", at, worker=3, code=451, reply="4.7.1 Try again later",
                      finished=round(at + 0.3, 3))
            s.sent(msg, round(at + 120 + s.rng.uniform(0, 30), 3), 1, attempt=2)
        else:
            s.sent(msg, at, 1 + 2 * (rcpt % 2))


def _spring_webinar(s: Sample) -> None:
    """Recipients 40-239, requested material over the last four days, and the anomalies."""
    for rcpt in range(40, 240):
        at = s.work_time(s.rng.randint(0, 3)) if rcpt != 77 else INCIDENT + 0.214
        msg = s.message(2, "spring-webinar", rcpt, created=QUEUED + DAY, due=round(at - 1, 3),
                        state="scheduled", updated=QUEUED + DAY)
        if rcpt == 77:  # the incident: three runs, three Message-IDs, one SendLog row
            s.sent(msg, at, 1)
            ghosts = [s.mid(msg["id"]), s.mid(msg["id"])]
            for mid in [msg["message_id"], *ghosts]:
                s.observe(msg, mid, INCIDENT, "mbox:forwarded-by-lead.mbox")
        elif rcpt == 131:  # ambiguous drop, requeued by an operator; the first copy had arrived
            first = BASE - 20 * 3600.0
            s.attempt(msg, "requeued", first, worker=3, code=None, finished=first + 30.0,
                      reply="connection lost during DATA; resolved by ops: requeue")
            s.audit.append((first + 900.0, "ops", "resolve-requeue", msg["id"],
                            "unknown -> scheduled"))
            s.sent(msg, first + 960.0, 1, attempt=2)
            s.observe(msg, msg["message_id"], round(first), "maildir:bcc-archive")
            s.observe(msg, msg["message_id"], round(first + 960.0), "maildir:bcc-archive")
        elif rcpt in (150, 201):  # ambiguous: may or may not have arrived, so never resent
            when = BASE - (3 * 3600.0 if rcpt == 150 else 26 * 3600.0)
            reply = "connection lost during DATA: [Errno 104] Connection reset by peer"
            s.attempt(msg, "unknown", when, worker=1, code=None, finished=when + 30.0, reply=reply)
            msg.update(state="unknown", attempts=1, updated_at=when + 30.0, last_reply=reply)
            if rcpt == 201:
                s.observe(msg, msg["message_id"], round(when), "maildir:bcc-archive")
        elif rcpt == 222:  # the stale claim of mail-2, silent for 50 minutes
            claimed = BASE - 3300.0
            token = s.attempt(msg, "sending", claimed, worker=2, code=None, reply=None)
            msg.update(state="sending", worker="mail-2", claim_token=token,
                       lease_until=claimed + 300.0, updated_at=claimed)
        elif rcpt % 41 == 0:
            s.fail(msg, at, 3, 554, "5.7.1 Message rejected as spam")
        else:
            s.sent(msg, at, 1 + 2 * (rcpt % 2))


def _product_update(s: Sample) -> None:
    """Recipients 151-300: some already out, some due now (the demo sends them), some not
    before 2035, some cancelled, one expired."""
    for rcpt in range(151, 301):
        created = BASE - 2 * DAY
        if rcpt <= 220:
            at = s.work_time(s.rng.randint(0, 1))
            msg = s.message(3, "product-update", rcpt, created=created, due=round(at - 5, 3),
                            state="scheduled", updated=created)
            s.sent(msg, at, 3)
            if rcpt == 200:  # its DSN (5.1.1) was found in the bounce mailbox
                msg.update(state="bounced", updated_at=at + 600.0,
                           last_reply="bounced: 5.1.1 mailbox unknown (DSN in the bounce mailbox)")
                s.suppressions.append((msg["email"].lower(), "bounced", at + 600.0, f"dsn row {msg['id']}"))
        elif rcpt <= 265:
            due = round(BASE - s.rng.uniform(60.0, 4 * 3600.0), 3)
            msg = s.message(3, "product-update", rcpt, created=created, due=due,
                            state="scheduled", updated=created)
            if rcpt % 9 == 0:  # tried once, deferred by the relay, due again now
                s.attempt(msg, "retry", due - 600.0, worker=1, code=451,
                          reply="4.3.2 Try again later", finished=due - 599.5)
                msg.update(attempts=1, updated_at=due - 599.5,
                           last_reply="451 4.3.2 Try again later")
        elif rcpt <= 290:
            s.message(3, "product-update", rcpt, created=created, due=FUTURE, state="scheduled",
                      updated=created)
        elif rcpt == 299:  # unsubscribed before its turn: the claim found it on the list
            when = BASE - DAY + rcpt
            s.suppressions.append((s.recipients[rcpt - 1][1].lower(), "unsubscribed", when - 60.0,
                                   "unsubscribe token"))
            s.message(3, "product-update", rcpt, created=created, due=when, state="suppressed",
                      updated=when, reply="suppressed: recipient unsubscribed (unsubscribe token)")
        elif rcpt < 300:
            when = BASE - DAY + rcpt
            msg = s.message(3, "product-update", rcpt, created=created, due=FUTURE,
                            state="cancelled", updated=when, reply="cancelled by ops: unsubscribed")
            s.audit.append((when, "ops", "cancel", msg["id"], "unsubscribed"))
        else:  # held back by a send window until its expiry passed: never sent, and never will be
            s.message(3, "product-update", rcpt, created=created, due=created, state="expired",
                      updated=BASE - DAY, expires=BASE - DAY,
                      reply="expired: past expires_at, never sent")


async def write(path: Path, s: Sample) -> None:
    async with open_db(str(path), create=True) as db, db.write():
        await db.execute("UPDATE schema_migrations SET applied_at = ?", (BASE - 8 * DAY,))
        await _insert(db, s)


async def _insert(db: Database, s: Sample) -> None:
    log: list[dict[str, Any]] = sorted(s.log, key=lambda r: (r["claimed_at"], r["message_id"]))
    audit: list[tuple[Any, ...]] = sorted(s.audit, key=lambda a: (a[0], a[3] or 0))
    for i, name in enumerate(CAMPAIGNS, start=1):
        await db.execute("INSERT INTO campaigns(id, name, created_at) VALUES (?, ?, ?)",
                         (i, name, BASE - 8 * DAY + i * 3600.0))
    await db.executemany("INSERT INTO recipients(id, email, name) VALUES (?, ?, ?)", s.recipients)
    await db.executemany(
        "INSERT INTO messages(id, campaign_id, recipient_id, dedupe_key, message_id, state, due_at, "
        "attempts, claim_token, worker, lease_until, last_reply, expires_at, created_at, "
        "updated_at) VALUES (:id, :campaign_id, :recipient_id, :dedupe_key, :message_id, :state, "
        ":due_at, :attempts, :claim_token, :worker, :lease_until, :last_reply, :expires_at, "
        ":created_at, :updated_at)", s.messages)
    await db.executemany(
        "INSERT INTO message_bodies(message_id, from_addr, from_name, to_name, subject, body_text) "
        "VALUES (:id, :from_addr, :from_name, :to_name, :subject, :body)",
        [{**m, "from_addr": FROM, "from_name": FROM_NAME} for m in s.messages])
    await db.executemany(
        "INSERT INTO send_log(message_id, dedupe_key, mid, recipient, campaign, attempt, worker, "
        "claim_token, status, claimed_at, finished_at, smtp_code, smtp_reply) VALUES (:message_id, "
        ":dedupe_key, :mid, :recipient, :campaign, :attempt, :worker, :claim_token, :status, "
        ":claimed_at, :finished_at, :smtp_code, :smtp_reply)", log)
    await db.executemany(
        "INSERT INTO workers(id, name, pid, host, started_at, heartbeat_at, stopped_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(w[0], w[1], w[2], f"{w[1]}.example.com", w[3], w[4], w[5]) for w in WORKERS])
    await db.executemany("INSERT INTO audit(at, actor, action, message_id, detail) "
                         "VALUES (?, ?, ?, ?, ?)", audit)
    await db.executemany(
        "INSERT INTO observations(mid, recipient, date, at, subject, source, observed_at, "
        "fingerprint, copy, row_id, traced_by) VALUES (:mid, :recipient, :date, :at, :subject, "
        ":source, :observed_at, :fingerprint, :copy, :row_id, :traced_by)", s.observations)
    await db.executemany("INSERT INTO suppressions(email, reason, at, source) VALUES (?, ?, ?, ?)",
                         sorted(s.suppressions))


def finish(path: Path) -> None:
    """One self-contained file: rollback journal (readers need no -wal/-shm), compacted."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("VACUUM")
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "sample.db"), help="where to write (sample.db)")
    out = Path(parser.parse_args(argv).out)
    tmp = out.with_name(out.name + ".tmp")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    asyncio.run(write(tmp, build()))
    finish(tmp)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
