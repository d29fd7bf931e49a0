"""The delivery worker's parts on their own: statuses, the retry schedule, renderings, rules."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from muster import addresses, failpoints, views
from muster.delivery.content import Content, decode_content, link
from muster.delivery.email import SmtpTarget, message_id, render, subscriber_mail
from muster.delivery.retries import next_delay_s, retry_payload
from muster.delivery.sms import SMS_CHARS, sms_text
from muster.delivery.webhook import WebhookGone, body_of, check_target, classify, signature
from muster.errors import PermanentDeliveryError, PermanentError, TransientDeliveryError
from muster.records import DeliveryRequest, Status, decode_request, status_of
from muster.settings import Settings

AT = datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def post(text: str = "db failover at 14:00", **fields: str) -> Content:
    view = views.Post(
        id="112365718733521099",
        author=fields.get("author", "pat"),
        as_account=fields.get("as_account", "ops"),
        text=text,
        visibility=fields.get("visibility", "internal"),  # type: ignore[arg-type]
        severity=fields.get("severity", "warning"),  # type: ignore[arg-type]
        in_reply_to=None,
        created_at="2024-05-01T12:00:01.011Z",
    )
    return decode_content("post", view.id, views.encode(view))


def dm(text: str = "are you safe?") -> Content:
    view = views.Message(
        id="112365718733521100",
        from_="mia",
        to="tom",
        text=text,
        in_reply_to=None,
        created_at="2024-05-01T12:00:01.011Z",
    )
    return decode_content("dm", view.id, views.encode(view))


def request(attempt: int = 0, schedule_from: int = 0) -> DeliveryRequest:
    return DeliveryRequest(
        id="1.mia.webhook",
        actor="ops",
        at=AT,
        message_id="1",
        kind="post",
        recipient="mia",
        channel="webhook",
        attempt=attempt,
        schedule_from=schedule_from,
    )


# --- statuses ---------------------------------------------------------------------------------
def test_status_round_trips_and_keeps_pipes_in_errors() -> None:
    status = Status("failed", 3, "webhook answered 500 | upstream")
    assert status_of(status.encode().encode()) == status
    assert status_of("pending|0|") == Status("pending", 0, "")
    for broken in (None, "", "sent", "sent|x|", "queued|1|"):
        assert status_of(broken) is None


# --- the retry schedule -------------------------------------------------------------------------
def test_retries_follow_the_schedule_with_jitter_then_give_up() -> None:
    schedule = (5, 300, 1800)
    for attempt, base in enumerate(schedule):
        for _ in range(50):
            delay = next_delay_s(request(attempt), schedule)
            assert delay is not None
            assert base * 0.8 <= delay <= base * 1.2
    assert next_delay_s(request(3), schedule) is None
    # a redrive starts a new schedule
    assert next_delay_s(request(4, schedule_from=4), schedule) is not None
    assert next_delay_s(request(7, schedule_from=4), schedule) is None


def test_a_retry_payload_is_the_same_request_one_attempt_on() -> None:
    again = decode_request(retry_payload(request(1)))
    assert again == request(2)
    assert retry_payload(request(1)) == retry_payload(request(1))  # one member in the set


# --- webhooks ---------------------------------------------------------------------------------
def test_webhook_body_and_signature_verify_with_standardwebhooks() -> None:
    content = post()
    body, text = body_of(content)
    assert body.decode() == text
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "1.mia.webhook",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature(SECRET, "1.mia.webhook", now, text),
    }
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "post.published"
    assert payload["data"]["text"] == "db failover at 14:00"
    assert Webhook(SECRET).verify(body_of(dm())[0], {**headers, "webhook-signature": signature(SECRET, "1.mia.webhook", now, body_of(dm())[1])})["type"] == "dm.received"  # fmt: skip


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (200, None),
        (204, None),
        (301, TransientDeliveryError),
        (400, TransientDeliveryError),
        (404, TransientDeliveryError),
        (408, TransientDeliveryError),
        (410, WebhookGone),
        (429, TransientDeliveryError),
        (500, TransientDeliveryError),
        (503, TransientDeliveryError),
    ],
)
def test_webhook_answers(status: int, error: type[Exception] | None) -> None:
    if error is None:
        classify(status, "")
    else:
        with pytest.raises(error):
            classify(status, "")
    assert issubclass(WebhookGone, PermanentError)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/x",
        "http://[::1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://169.254.169.254/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://224.0.0.1/",  # multicast
        "http://box.local/",
        "ftp://example.com/",
        "http://example.com:99999/",
    ],
)
def test_check_target_refuses_what_no_resolver_sees(url: str) -> None:
    with pytest.raises(PermanentDeliveryError):
        check_target(url, allow_private=False)


def test_check_target_lets_public_targets_and_allowed_private_ones_through() -> None:
    check_target("https://hooks.example.com/muster", allow_private=False)
    check_target("http://93.184.216.34/hook", allow_private=False)
    check_target("http://127.0.0.1:9/x", allow_private=True)
    assert addresses.is_private_address("10.0.0.1")
    assert addresses.is_private_address("fe80::1")
    assert addresses.is_private_address("not an address")
    assert not addresses.is_private_address("93.184.216.34")
    assert not addresses.is_private_host("hooks.example.com")


# --- SMS --------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 50, 120, 160, 500])
def test_sms_is_one_message_with_the_link(length: int) -> None:
    content = post("x" * length, severity="critical")
    text = sms_text(content, "https://muster.example.com")
    assert len(text) <= SMS_CHARS
    assert text.startswith("[CRITICAL] @ops: x")
    assert text.endswith(" https://muster.example.com/v1/posts/112365718733521099")
    assert ("…" in text) == (length > 90)


def test_sms_of_a_dm_and_of_an_info_post() -> None:
    assert sms_text(dm(), "http://m.test") == "DM from @mia: are you safe? http://m.test/v1/dms/mia"
    assert sms_text(post("hi", severity="info"), "http://m.test").startswith("@ops: hi ")
    assert link("http://m.test/", post()) == "http://m.test/v1/posts/112365718733521099"


# --- email ------------------------------------------------------------------------------------
def test_email_render_has_subject_parts_date_and_is_deterministic() -> None:
    content = post("line one\n<b>not bold</b>", as_account="ops", author="pat")
    raw = render(content, mail_from="alerts@muster.test", public_url="http://m.test")
    assert raw == render(content, mail_from="alerts@muster.test", public_url="http://m.test")
    assert b"\r\n" in raw
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(mail, email.message.EmailMessage)
    assert mail["Subject"] == "[WARNING] @ops (by @pat): line one <b>not bold</b>"
    assert mail["From"] == "alerts@muster.test"
    assert mail["Date"].datetime == datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
    html = mail.get_body(("html",))
    assert html is not None
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html.get_content()
    assert message_id("1.mia.email", "https://muster.example.com:8443/x") == (
        "<1.mia.email@muster.example.com>"
    )
    dm_mail = email.message_from_bytes(
        render(dm(), mail_from="a@m.test", public_url="http://m.test"), policy=email.policy.default
    )
    assert dm_mail["Subject"] == "Direct message from @mia"


def test_subscriber_email_is_one_template_with_each_link_literal_and_valid_mime() -> None:
    content = post("Checkout — é\n<b>slow</b> " + "x" * 300, visibility="public")
    template = subscriber_mail(content, mail_from="alerts@muster.test", public_url="http://m.test")
    links = [f"http://m.test/unsubscribe/{n * 24}.{n * 43}" for n in "ab"]
    raws = [template.with_link(target) for target in links]
    for target, raw in zip(links, raws, strict=True):
        # raw header lines: RFC 2369/8058 links a mail client can read (not RFC 2047 words)
        assert raw.startswith(f"List-Unsubscribe: <{target}>\r\n".encode())
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
        mail = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(mail, email.message.EmailMessage)
        assert mail.defects == []
        assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]
        assert all(p.defects == [] for p in mail.iter_parts())
        assert mail["Subject"].startswith("[WARNING] @ops (by @pat): Checkout")
        plain_part, rich_part = mail.get_body(("plain",)), mail.get_body(("html",))
        assert plain_part is not None
        assert rich_part is not None
        # canonical text is CRLF (RFC 2046), kept as such inside base64
        plain = plain_part.get_content().replace("\r\n", "\n")
        rich = rich_part.get_content().replace("\r\n", "\n")
        assert plain.endswith(f"\nUnsubscribe: {target}\n")
        assert "Checkout — é\n<b>slow</b>" in plain
        assert "http://m.test/@ops/posts/112365718733521099" in plain
        assert f'<a href="{target}">Unsubscribe</a>' in rich
        assert "&lt;b&gt;slow&lt;/b&gt;" in rich
    assert raws[0] != raws[1]
    assert raws[0] == template.with_link(links[0])  # a resend is byte-for-byte the same


def test_smtp_url_forms() -> None:
    plain = SmtpTarget.from_url("smtp://mail.example.com")
    assert (plain.port, plain.use_tls, plain.start_tls, plain.username) == (25, False, None, None)
    submission = SmtpTarget.from_url("smtp://u%40x:p%2Fw@mail.example.com:587?starttls=1")
    assert (submission.port, submission.start_tls) == (587, True)
    assert (submission.username, submission.password) == ("u@x", "p/w")
    never = SmtpTarget.from_url("smtp://mail.example.com:2525?starttls=0")
    assert never.start_tls is False
    tls = SmtpTarget.from_url("smtps://mail.example.com")
    assert (tls.port, tls.use_tls, tls.start_tls) == (465, True, False)


# --- failpoints -------------------------------------------------------------------------------
def test_failpoints_do_nothing_unless_armed() -> None:
    for point in failpoints.POINTS:
        failpoints.hit(point, Settings())
        failpoints.hit(point, Settings(failpoints=("something.else",)))
