"""Building messages: the fast path for plain ASCII text writes exactly the bytes the stdlib
``email`` package writes, and everything else (non-ASCII, HTML, long or special headers) is left
to the ``email`` package."""

from __future__ import annotations

import email
import email.policy
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sender import message
from sender.delivery import _dot_stuff
from sender.message import build, make_mid, row_of

ascii_text = st.text(alphabet=st.characters(min_codepoint=9, max_codepoint=126), max_size=300)
names = st.one_of(st.none(), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30))


def slow(**kw: object) -> bytes:
    original = message._build_plain
    message._build_plain = lambda *a, **k: None  # type: ignore[assignment]
    try:
        return build(**kw).data  # type: ignore[arg-type]
    finally:
        message._build_plain = original


@settings(max_examples=300, deadline=None)
@given(subject=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=90),
       body=ascii_text, from_name=names, to_name=names)
def test_fast_path_is_byte_identical_to_the_email_package(subject: str, body: str, from_name: str | None,
                                                         to_name: str | None) -> None:
    """For any ASCII subject, body and names, the fast path (when it applies) equals EmailMessage's bytes."""
    kw = dict(mid="<7.0123456789abcdef@example.org>", from_addr="team@example.org", from_name=from_name,
              to="lead.one@example.com", to_name=to_name, subject=subject, body_text=body, body_html=None,
              date=1_700_000_000.0)
    assert build(**kw).data == slow(**kw)  # type: ignore[arg-type]


def test_fast_path_is_taken_for_the_common_case() -> None:
    """A plain campaign message takes the fast path (it is what makes the daemon cheap)."""
    out = message._build_plain("<1.ab@example.org>", "a@example.org", "Team", "b@example.com", "Bob Smith",
                               "Your slides", "Hello Bob,\nhere they are.\n", None, 0.0)
    assert out is not None and out.startswith(b"From: Team <a@example.org>\r\nTo: Bob Smith <b@example.com>\r\n")


def test_non_ascii_and_html_take_the_email_package() -> None:
    """Unicode names and subjects are RFC 2047 encoded and an HTML part makes multipart/alternative."""
    env = build(mid="<2.ab@example.org>", from_addr="a@example.org", from_name="Zespół",
                to="b@example.pl", to_name="Łukasz", subject="Zażółć gęślą jaźń", body_text="cześć",
                body_html="<p>cześć</p>", date=0.0)
    msg = email.message_from_bytes(env.data, policy=email.policy.default)
    assert msg["Subject"] == "Zażółć gęślą jaźń" and msg["To"] == "Łukasz <b@example.pl>"
    assert msg.get_content_type() == "multipart/alternative"
    assert env.data.isascii()


def test_message_id_embeds_the_row() -> None:
    """The Message-ID names its queue row, and only ids of our shape are traced."""
    mid = make_mid(4711, "example.org")
    assert row_of(mid) == 4711 and row_of("<abc@example.org>") is None


def test_long_lines_and_long_headers_fall_back_identically() -> None:
    """A body line over 998 characters or a header over 78 leaves the fast path, with the same result as before."""
    for subject, body in (("s", "x" * 1200 + "\n"), ("word " * 30, "short\n")):
        kw = dict(mid="<3.ab@example.org>", from_addr="a@example.org", from_name=None, to="b@example.com",
                  to_name=None, subject=subject.strip(), body_text=body, body_html=None, date=0.0)
        assert message._build_plain(*kw.values()) is None  # type: ignore[arg-type]
        assert build(**kw).data == slow(**kw)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b".."]),
                                               max_size=30).map(b"".join))
def test_dot_stuffing_matches_the_plain_rule(data: bytes) -> None:
    """The shortcut (skip the rewrites when there is nothing to rewrite) gives the bytes of the
    plain RFC 5321 rule: every line end CRLF, a leading dot doubled, then the end marker."""
    plain = re.sub(rb"\r?\n|\r", b"\r\n", data)
    plain += b"" if plain.endswith(b"\r\n") else b"\r\n"
    assert _dot_stuff(data) == re.sub(rb"(?m)^\.", b"..", plain) + b".\r\n"


header_names = st.sampled_from(["X-Campaign", "X-Lead-Id", "List-Id", "Reply-To", "List-Unsubscribe",
                                "List-Unsubscribe-Post", "Precedence"])


@settings(max_examples=300, deadline=None)
@given(subject=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=60),
       body=ascii_text, values=st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                                                min_size=1, max_size=80), max_size=4),
       names=st.lists(header_names, max_size=4, unique=True))
def test_fast_path_with_extra_headers_is_byte_identical(subject: str, body: str, values: list[str],
                                                         names: list[str]) -> None:
    """Extra headers (Reply-To, custom, List-Unsubscribe) keep the fast path equal to EmailMessage's bytes."""
    extra = [(n, "lead@example.org" if n == "Reply-To" else v) for n, v in zip(names, values, strict=False)]
    kw = dict(mid="<7.0123456789abcdef@example.org>", from_addr="team@example.org", from_name="Team",
              to="lead.one@example.com", to_name=None, subject=subject, body_text=body, body_html=None,
              date=1_700_000_000.0, extra=extra)
    assert build(**kw).data == slow(**kw)  # type: ignore[arg-type]


def test_extra_headers_and_return_path_are_written() -> None:
    """Extra headers follow the Message-ID and ``sender`` becomes the envelope sender."""
    env = build(mid="<5.ab@example.org>", from_addr="a@example.org", from_name=None, to="b@example.com",
                to_name=None, subject="s", body_text="b\n", body_html=None, date=0.0,
                extra=[("Reply-To", "Sales Desk <sales@example.org>"), ("X-Campaign", "spring")],
                sender="bounces+5@example.org")
    msg = email.message_from_bytes(env.data, policy=email.policy.default)
    assert msg["Reply-To"] == "Sales Desk <sales@example.org>" and msg["X-Campaign"] == "spring"
    assert env.sender == "bounces+5@example.org"
