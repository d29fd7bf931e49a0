"""load_settings: every value is parsed, bounded and refused with a message naming its variable."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from muster.errors import ConfigError
from muster.settings import Settings, env_name, known_variables, load_settings

GOOD_TOKEN = "q7Rk2vXn9LpT4sWz8YbC3mHd6FgJ1aNe"  # 32 characters, 32 distinct

INT_FIELDS = [f.name for f in msgspec.structs.fields(Settings) if f.type is int]


def refused(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return str(caught.value)


# --- defaults and names -------------------------------------------------------------------
def test_empty_environment_gives_the_defaults() -> None:
    assert load_settings({}) == Settings()


def test_empty_strings_count_as_unset() -> None:
    assert load_settings({name: "" for name in known_variables()}) == Settings()


def test_reads_os_environ_when_given_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSTER_PARTITIONS", "4")
    monkeypatch.setenv("MUSTER_REDIS_URL", "redis://127.0.0.1:7000/0")
    settings = load_settings()
    assert settings.partitions == 4
    assert settings.redis_url == "redis://127.0.0.1:7000/0"


def test_every_settings_field_has_a_variable() -> None:
    fields = [f.name for f in msgspec.structs.fields(Settings)]
    assert sorted(known_variables()) == sorted(env_name(f) for f in fields)
    assert len(set(known_variables())) == len(fields)


def test_env_name_drops_the_seconds_suffix() -> None:
    assert env_name("stream_retention_s") == "MUSTER_STREAM_RETENTION"
    assert env_name("claim_idle_ms") == "MUSTER_CLAIM_IDLE_MS"
    assert env_name("redis_url") == "MUSTER_REDIS_URL"


def test_values_are_parsed_to_their_types(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "MUSTER_REDIS_URL": "rediss://cache.internal:6380/2",
            "MUSTER_API_HOST": "0.0.0.0",
            "MUSTER_API_PORT": "65535",
            "MUSTER_PARTITIONS": "1024",
            "MUSTER_STREAM_RETENTION": "0",
            "MUSTER_CLAIM_IDLE_MS": "100",
            "MUSTER_WEBHOOK_ALLOW_PRIVATE": "Yes",
            "MUSTER_DATA_DIR": str(tmp_path),
            "MUSTER_EMBEDDED_FSYNC": "everysec",
            "MUSTER_LOG_FORMAT": "json",
            "MUSTER_LOG_LEVEL": "debug",
            "MUSTER_ADMIN_TOKEN": GOOD_TOKEN,
            "MUSTER_SMTP_URL": "smtp://mail.example.org:25",
            "MUSTER_MAIL_FROM": "muster@example.org",
        }
    )
    assert settings.redis_url == "rediss://cache.internal:6380/2"
    assert settings.api_host == "0.0.0.0"
    assert settings.api_port == 65535
    assert settings.partitions == 1024
    assert settings.stream_retention_s == 0
    assert settings.claim_idle_ms == 100
    assert settings.webhook_allow_private is True
    assert settings.data_dir == tmp_path
    assert settings.embedded_fsync == "everysec"
    assert settings.log_format == "json"
    assert settings.log_level == "debug"
    assert settings.admin_token == GOOD_TOKEN
    assert settings.smtp_url == "smtp://mail.example.org:25"
    assert settings.mail_from == "muster@example.org"


def test_archive_dir_follows_data_dir_unless_set(tmp_path: Path) -> None:
    assert load_settings({"MUSTER_DATA_DIR": str(tmp_path)}).archive_dir == tmp_path / "archive"
    explicit = load_settings(
        {"MUSTER_DATA_DIR": str(tmp_path), "MUSTER_ARCHIVE_DIR": str(tmp_path / "elsewhere")}
    )
    assert explicit.archive_dir == tmp_path / "elsewhere"
    assert load_settings({}).archive_dir == Path("var/archive")


def test_socket_timeout_outlasts_the_blocking_read() -> None:
    settings = load_settings({"MUSTER_CONSUMER_BLOCK_MS": "60000"})
    assert settings.redis_socket_timeout > 60.0


# --- integers ------------------------------------------------------------------------------
def test_int_fields_are_found() -> None:
    assert {"api_port", "partitions", "claim_idle_ms", "stream_retention_s"} <= set(INT_FIELDS)


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("raw", ["abc", "1.5", "0x10", "12 apples"])
def test_non_integers_are_refused(field: str, raw: str) -> None:
    message = refused({env_name(field): raw})
    assert message.startswith(f"{env_name(field)} must be an integer")
    assert repr(raw) in message


@pytest.mark.parametrize("field", INT_FIELDS)
def test_out_of_range_integers_are_refused(field: str) -> None:
    message = refused({env_name(field): "-1"})
    assert message.startswith(f"{env_name(field)} must be between")
    assert "got -1" in message
    too_big = refused({env_name(field): str(1 << 62)})
    assert too_big.startswith(f"{env_name(field)} must be between")


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("MUSTER_API_PORT", "0", "between 1 and 65535"),
        ("MUSTER_API_PORT", "65536", "between 1 and 65535"),
        ("MUSTER_PARTITIONS", "0", "between 1 and 1024"),
        ("MUSTER_CONSUMER_BLOCK_MS", "9", "between 10 and 60000"),
        ("MUSTER_CLAIM_IDLE_MS", "99", "between 100 and"),
        ("MUSTER_MAX_BODY_BYTES", "1023", "between 1024 and"),
    ],
)
def test_bounds_are_named(name: str, raw: str, fragment: str) -> None:
    assert fragment in refused({name: raw})


def test_the_first_bad_variable_is_reported_alone() -> None:
    message = refused({"MUSTER_API_PORT": "http", "MUSTER_PARTITIONS": "many"})
    assert "MUSTER_API_PORT" in message
    assert "MUSTER_PARTITIONS" not in message


# --- booleans and choices ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("true", True), ("ON", True), (" yes ", True), ("0", False), ("off", False)],
)
def test_booleans(raw: str, value: bool) -> None:
    assert load_settings({"MUSTER_WEBHOOK_ALLOW_PRIVATE": raw}).webhook_allow_private is value


def test_bad_boolean_is_refused() -> None:
    message = refused({"MUSTER_WEBHOOK_ALLOW_PRIVATE": "maybe"})
    assert message == "MUSTER_WEBHOOK_ALLOW_PRIVATE must be true or false, got 'maybe'"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MUSTER_SMS_PROVIDER", "sns"),
        ("MUSTER_EMBEDDED_FSYNC", "no"),
        ("MUSTER_LOG_FORMAT", "xml"),
        ("MUSTER_LOG_LEVEL", "INFO"),
    ],
)
def test_bad_choices_are_refused(name: str, raw: str) -> None:
    message = refused({name: raw})
    assert message.startswith(f"{name} must be one of ")
    assert repr(raw) in message


# --- URLs and addresses --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("MUSTER_REDIS_URL", "http://127.0.0.1:6379", "redis://"),
        ("MUSTER_REDIS_URL", "127.0.0.1:6379", "redis://"),
        ("MUSTER_REDIS_URL", "redis://", "must name a host"),
        ("MUSTER_SMTP_URL", "mail.example.org", "smtp://"),
        ("MUSTER_TWILIO_BASE_URL", "ftp://api.twilio.com", "https://"),
    ],
)
def test_bad_urls_are_refused(name: str, raw: str, fragment: str) -> None:
    message = refused({name: raw})
    assert message.startswith(f"{name} must")
    assert fragment in message


def test_unix_socket_redis_url_needs_no_host() -> None:
    url = "unix:///run/redis/redis.sock"
    assert load_settings({"MUSTER_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("raw", ["muster", "muster@localhost", "a b@example.org", "<x@y.org>"])
def test_bad_mail_from_is_refused(raw: str) -> None:
    message = refused({"MUSTER_SMTP_URL": "smtp://mail.example.org", "MUSTER_MAIL_FROM": raw})
    assert message.startswith("MUSTER_MAIL_FROM must be an email address")


def test_smtp_needs_a_sender() -> None:
    message = refused({"MUSTER_SMTP_URL": "smtps://mail.example.org:465"})
    assert message == "MUSTER_MAIL_FROM is required when MUSTER_SMTP_URL is set"


# --- the admin token -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    ["changeme", "CHANGEME", "change-me", "secret", " password ", "admin", "token", "xxx", "test"],
)
def test_placeholder_admin_tokens_are_refused(raw: str) -> None:
    message = refused({"MUSTER_ADMIN_TOKEN": raw})
    assert message.startswith("MUSTER_ADMIN_TOKEN is a placeholder")
    assert "token_urlsafe" in message  # says how to make a real one


@pytest.mark.parametrize("raw", ["a" * 64, "abababababababababababababababab", "1234567" * 6])
def test_long_but_repetitive_admin_tokens_are_refused(raw: str) -> None:
    assert refused({"MUSTER_ADMIN_TOKEN": raw}).startswith("MUSTER_ADMIN_TOKEN is a placeholder")


def test_short_admin_token_is_refused_without_echoing_it() -> None:
    raw = GOOD_TOKEN[:31]
    message = refused({"MUSTER_ADMIN_TOKEN": raw})
    assert message.startswith("MUSTER_ADMIN_TOKEN must be at least 32 characters (got 31)")
    assert raw not in message


def test_good_admin_token_is_kept() -> None:
    assert load_settings({"MUSTER_ADMIN_TOKEN": GOOD_TOKEN}).admin_token == GOOD_TOKEN


# --- SMS via Twilio ------------------------------------------------------------------------
TWILIO = {
    "MUSTER_SMS_PROVIDER": "twilio",
    "MUSTER_TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
    "MUSTER_TWILIO_AUTH_TOKEN": "f" * 32,
    "MUSTER_TWILIO_FROM": "+15005550006",
}


def test_twilio_with_everything_it_needs() -> None:
    settings = load_settings(TWILIO)
    assert settings.sms_provider == "twilio"
    assert settings.twilio_account_sid == TWILIO["MUSTER_TWILIO_ACCOUNT_SID"]
    assert settings.twilio_from == "+15005550006"
    assert settings.twilio_base_url == "https://api.twilio.com"


@pytest.mark.parametrize(
    "missing", ["MUSTER_TWILIO_ACCOUNT_SID", "MUSTER_TWILIO_AUTH_TOKEN", "MUSTER_TWILIO_FROM"]
)
def test_twilio_requires_its_credentials(missing: str) -> None:
    environ = {k: v for k, v in TWILIO.items() if k != missing}
    assert refused(environ) == f"{missing} is required when MUSTER_SMS_PROVIDER=twilio"
    assert refused({**environ, missing: ""}) == (
        f"{missing} is required when MUSTER_SMS_PROVIDER=twilio"
    )


def test_the_log_provider_needs_no_credentials() -> None:
    assert load_settings({"MUSTER_SMS_PROVIDER": "log"}).sms_provider == "log"


# --- MUSTER_PUBLIC_URL follows the api's address ------------------------------------------------
@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"MUSTER_API_PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"MUSTER_API_HOST": "10.1.2.3"}, "http://10.1.2.3:8000"),
        ({"MUSTER_API_HOST": "0.0.0.0", "MUSTER_API_PORT": "8080"}, "http://localhost:8080"),
        ({"MUSTER_API_HOST": "::"}, "http://localhost:8000"),
        ({"MUSTER_API_HOST": "::1", "MUSTER_API_PORT": "8001"}, "http://[::1]:8001"),
        (
            {"MUSTER_API_PORT": "9000", "MUSTER_PUBLIC_URL": "https://alerts.example.com"},
            "https://alerts.example.com",
        ),
    ],
)
def test_the_public_url_follows_the_api_host_and_port_unless_set(
    environ: dict[str, str], url: str
) -> None:
    """Changing only the port must not leave every link in email and SMS on port 8000."""
    assert load_settings(environ).public_url == url


# --- company sign-in (OpenID Connect) -----------------------------------------------------------
OIDC = {
    "MUSTER_OIDC_ISSUER": "https://login.example.com/realms/staff/",
    "MUSTER_OIDC_CLIENT_ID": "muster",
    "MUSTER_OIDC_CLIENT_SECRET": "k3J9s-0qLw8vZ2xR",
}


def test_company_sign_in_is_off_by_default() -> None:
    settings = load_settings({})
    assert not settings.oidc_enabled
    assert settings.oidc_claim == "email"
    assert settings.oidc_allowed_domains == ()


def test_company_sign_in_reads_its_variables() -> None:
    settings = load_settings(
        {
            **OIDC,
            "MUSTER_OIDC_CLAIM": "upn",
            "MUSTER_OIDC_ALLOWED_DOMAINS": "Example.com, @staff.example.org",
            "MUSTER_OIDC_NAME": "Example Corp",
        }
    )
    assert settings.oidc_enabled
    assert settings.oidc_issuer == "https://login.example.com/realms/staff"  # no trailing /
    assert settings.oidc_client_id == "muster"
    assert settings.oidc_claim == "upn"
    assert settings.oidc_allowed_domains == ("example.com", "staff.example.org")
    assert settings.oidc_name == "Example Corp"


@pytest.mark.parametrize(
    "issuer", ["http://127.0.0.1:9000", "http://localhost:9000/oidc", "http://[::1]:9000"]
)
def test_a_plain_http_issuer_is_allowed_on_loopback_only(issuer: str) -> None:
    assert load_settings({**OIDC, "MUSTER_OIDC_ISSUER": issuer}).oidc_issuer == issuer


@pytest.mark.parametrize(
    ("issuer", "reason"),
    [
        ("http://login.example.com", "must use https"),
        ("http://10.0.0.5:8080", "must use https"),
        ("ftp://login.example.com", "must be an https:// URL"),
        ("login.example.com", "must be an https:// URL"),
        ("https://login.example.com/?tenant=1", "no query or fragment"),
    ],
)
def test_an_unsafe_issuer_is_refused(issuer: str, reason: str) -> None:
    message = refused({**OIDC, "MUSTER_OIDC_ISSUER": issuer})
    assert message.startswith("MUSTER_OIDC_ISSUER ")
    assert reason in message


@pytest.mark.parametrize("missing", sorted(OIDC))
def test_a_half_configured_provider_is_refused(missing: str) -> None:
    environ = {name: value for name, value in OIDC.items() if name != missing}
    message = refused(environ)
    assert message.startswith(missing)
    assert "required" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MUSTER_OIDC_CLAIM", "upn"),
        ("MUSTER_OIDC_ALLOWED_DOMAINS", "example.com"),
        ("MUSTER_OIDC_NAME", "Example"),
    ],
)
def test_company_sign_in_options_without_an_issuer_are_refused(name: str, value: str) -> None:
    message = refused({name: value})
    assert message.startswith(name)
    assert "MUSTER_OIDC_ISSUER is not" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MUSTER_OIDC_CLAIM", "e mail"),
        ("MUSTER_OIDC_ALLOWED_DOMAINS", "example.com, not a domain"),
        ("MUSTER_OIDC_ALLOWED_DOMAINS", "localhost"),
        ("MUSTER_OIDC_CLIENT_SECRET", "changeme"),
    ],
)
def test_bad_company_sign_in_values_are_refused(name: str, value: str) -> None:
    assert refused({**OIDC, name: value}).startswith(name)
