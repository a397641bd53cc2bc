"""Bounce and complaint messages as mail systems write them (Postfix's DSN, an ARF report), for
the feedback tests: raw bytes, dropped into a maildir the way a bounce mailbox receives them."""

from __future__ import annotations

import mailbox
from pathlib import Path


def dsn(*, to: str, recipient: str, status: str, original: bytes | None, n: int = 1) -> bytes:
    """A Postfix-style RFC 3464 report; ``original`` (headers or whole message) is quoted if given."""
    action = "failed" if status.startswith("5") else "delayed"
    quoted = ""
    if original is not None:
        head = original.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace").replace("\r\n", "\n")
        quoted = f"""--BOUNDARY
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{head}
"""
    text = f"""Return-Path: <>
Delivered-To: {to}
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: Mon, 10 Mar 2025 09:0{n % 10}:00 +0000
Message-ID: <dsn-{n}-{status}@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="BOUNDARY"

This is a MIME-encapsulated message.

--BOUNDARY
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--BOUNDARY
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 4Q{n}ABC
Arrival-Date: Mon, 10 Mar 2025 08:59:00 +0000

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mail.example.com
Diagnostic-Code: smtp; {status[0]}50 {status} <{recipient}>: Recipient address rejected

{quoted}--BOUNDARY--
"""
    return text.replace("\n", "\r\n").encode("ascii")


def arf(*, to: str, recipient: str, original: bytes) -> bytes:
    """An RFC 5965 abuse report quoting the whole original message."""
    body = original.decode("ascii", "replace").replace("\r\n", "\n")
    text = f"""From: abuse@mailbox.example.com
To: {to}
Subject: Abuse report
Date: Mon, 10 Mar 2025 10:00:00 +0000
Message-ID: <arf-1@mailbox.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.1.

--ARF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <{recipient}>

--ARF
Content-Type: message/rfc822
Content-Disposition: inline

{body}
--ARF--
"""
    return text.replace("\n", "\r\n").encode("ascii")


def drop(folder: Path, *messages: bytes) -> Path:
    box = mailbox.Maildir(folder, create=True)
    for raw in messages:
        box.add(raw)
    return folder
