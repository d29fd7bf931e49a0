"""Settings: every MUSTER_ variable, read once at a process entrypoint into a frozen object.

Library code never reads the environment; it is handed a `Settings`. Invalid or unsafe
values are refused at start-up with a `ConfigError` naming the variable and the reason.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from muster.errors import ConfigError

# Values people paste from examples; refusing them beats running an admin door anyone can open.
_PLACEHOLDERS = {"changeme", "change-me", "secret", "password", "admin", "token", "xxx", "test"}


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
"""MUSTER_REDIS_URL schemes that name a Redis Cluster (by some of its nodes); every other
form is one server."""


class ClusterAddress(msgspec.Struct, frozen=True, kw_only=True):
    """A Redis Cluster as MUSTER_REDIS_URL names it:
    `redis+cluster://[user:password@]host:port[,host:port...]` (`rediss+cluster://` for TLS).
    The nodes are where the client starts; it learns the rest of the cluster from them."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None


def cluster_address(url: str) -> ClusterAddress | None:
    """The cluster a cluster URL names; None for a single-node URL. ValueError if malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        return None
    for end in ("/", "?", "#"):
        rest = rest.split(end, 1)[0]
    credentials, at, hosts = rest.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = []
    for raw in hosts.split(","):
        host, colon, port = raw.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"must list the cluster's nodes as host:port[,host:port...] after "
                f"{scheme}://, got {raw.strip()!r}"
            )
        nodes.append((host, int(port)))
    return ClusterAddress(
        nodes=tuple(nodes),
        tls=scheme == "rediss+cluster",
        username=username,
        password=password,
    )


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str | None = None
    rq_redis_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = 1
    metrics_address: str | None = "127.0.0.1:9464"
    up_delivery_workers: int = 2
    redis_connections: int = 64
    admin_token: str | None = None
    scim_token: str | None = None
    partitions: int = 1
    max_post_chars: int = 500
    max_body_bytes: int = 64 * 1024
    max_lag: int = 10_000
    smtp_url: str | None = None
    mail_from: str | None = None
    sms_provider: str = "log"
    twilio_base_url: str = "https://api.twilio.com"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    webhook_allow_private: bool = False
    data_dir: Path = Path("var")
    env_file: Path = Path(".env")
    archive_dir: Path = Path("var/archive")
    archive_segment_bytes: int = 64 * 1024 * 1024
    embedded_fsync: str = "always"
    log_format: str = "auto"
    log_level: str = "info"
    consumer_batch: int = 256
    consumer_block_ms: int = 2_000
    claim_idle_ms: int = 30_000
    max_attempts: int = 5
    timeline_max: int = 800
    fanout_on_read_threshold: int = 10_000
    live_retention: int = 100_000
    public_url: str = "http://127.0.0.1:8000"
    delivery_retry_schedule: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    delivery_concurrency: int = 256
    webhook_timeout_s: int = 10
    smtp_connections: int = 4
    http_host_connections: int = 64
    failpoints: tuple[str, ...] = ()
    group_dead_after_s: int = 24 * 3600
    write_replicas: int = 0
    write_wait_ms: int = 1000
    stream_retention_s: int = 7 * 24 * 3600
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_claim: str = "email"
    oidc_allowed_domains: tuple[str, ...] = ()
    oidc_name: str | None = None
    subscribe_rate: int = 10
    subscribe_address_rate: int = 3
    subscribe_daily_confirmations: int = 5
    mail_in_secret: str | None = None
    mail_in_domain: str | None = None
    mail_in_address: str | None = None
    mail_in_max_bytes: int = 10 * 1024 * 1024
    mail_in_reply_days: int = 30
    mailgun_signing_key: str | None = None
    mail_in_tls_cert: Path | None = None
    mail_in_tls_key: Path | None = None

    @property
    def reply_domain(self) -> str:
        """The domain of reply addresses: MUSTER_MAIL_IN_DOMAIN, else MUSTER_PUBLIC_URL's host."""
        return self.mail_in_domain or urlsplit(self.public_url).hostname or "localhost"

    @property
    def oidc_enabled(self) -> bool:
        """Company sign-in is on (load_settings makes sure it is then fully configured)."""
        return self.oidc_issuer is not None

    @property
    def redis_cluster(self) -> ClusterAddress | None:
        """The Redis Cluster MUSTER_REDIS_URL names, or None for a single Redis."""
        return None if self.redis_url is None else cluster_address(self.redis_url)

    @property
    def rq_url(self) -> str | None:
        """Where rq keeps its queues: MUSTER_RQ_REDIS_URL, else MUSTER_REDIS_URL when that is
        one server (rq has no cluster mode); None when neither can serve."""
        if self.rq_redis_url is not None:
            return self.rq_redis_url
        return None if self.redis_cluster is not None else self.redis_url

    @property
    def redis_socket_timeout(self) -> float:
        """Longer than any blocking read, so a quiet stream never looks like a dead socket."""
        return self.consumer_block_ms / 1000 + 5.0


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return raw

    return parse


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(
                f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}"
            )
        if parts.scheme not in {"unix"} and not parts.hostname:
            raise ValueError("must name a host")
        return raw

    return parse


def _redis_url(raw: str) -> str:
    """One server (redis://, rediss://, unix://) or a cluster (redis+cluster://host:port,...)."""
    if cluster_address(raw) is None:
        return _url("redis", "rediss", "unix", *CLUSTER_SCHEMES)(raw)
    return raw


def _rq_url(raw: str) -> str:
    if raw.partition("://")[0] in CLUSTER_SCHEMES:
        raise ValueError(
            "names a Redis Cluster, and rq has no cluster mode: give operator and timed jobs "
            "a single-node Redis (redis://, rediss:// or unix://)"
        )
    return _url("redis", "rediss", "unix")(raw)


def _secret(what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.strip().lower() in _PLACEHOLDERS or len(set(raw)) < 8:
            raise ValueError(
                "is a placeholder; generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if len(raw) < 32:
            raise ValueError(f"must be at least 32 characters (got {len(raw)}): it is {what}")
        return raw

    return parse


def _address(raw: str) -> str | None:
    """`host:port` (`[v6]:port`) to listen on, or `off`."""
    if raw.strip().lower() == "off":
        return None
    split_address(raw)
    return raw


def split_address(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be host:port (e.g. 127.0.0.1:9464) or off, got {raw!r}")
    return host, int(port)


def _seconds_list(raw: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"must be comma-separated seconds, e.g. 5,300,1800, got {raw!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError("must list at least one delay, none negative")
    return values


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _email(raw: str) -> str:
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", raw):
        raise ValueError(f"must be an email address, got {raw!r}")
    return raw


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _issuer(raw: str) -> str:
    """An OpenID provider's issuer: https (plain http only on a loopback address, where tests
    and a provider on the same machine run), no query or fragment (OIDC Discovery 1.0, 4)."""
    parts = urlsplit(raw)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ValueError(f"must be an https:// URL naming the provider, got {raw!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"must use https (plain http is allowed on a loopback address only), got {raw!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"must have no query or fragment, got {raw!r}")
    return raw.rstrip("/")


_CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9-]{2,}")


def _client_secret(raw: str) -> str:
    if raw.strip().lower() in _PLACEHOLDERS:
        raise ValueError("is a placeholder; use the client secret your identity provider issued")
    return raw


def _claim(raw: str) -> str:
    if not _CLAIM.fullmatch(raw):
        raise ValueError(f"must be an ID-token claim name such as email or upn, got {raw!r}")
    return raw


def _domains(raw: str) -> tuple[str, ...]:
    domains = tuple(part.strip().lower().lstrip("@") for part in raw.split(",") if part.strip())
    for domain in domains:
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(
                f"must be comma-separated email domains, e.g. example.com, got {domain!r}"
            )
    return domains


def _readable_file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ValueError(f"must name a readable file, got {raw!r}")
    return path


def _domain(raw: str) -> str:
    domain = raw.strip().lower().lstrip("@")
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"must be a mail domain, e.g. mail.example.com, got {raw!r}")
    return domain


_OIDC_REQUIRED = ("oidc_issuer", "oidc_client_id", "oidc_client_secret")
_OIDC_OPTIONAL = ("oidc_claim", "oidc_allowed_domains", "oidc_name")


def _check_oidc(values: Mapping[str, Any]) -> None:
    """Company sign-in is all or nothing: a half-configured provider is refused, not ignored."""
    present = [field for field in _OIDC_REQUIRED if field in values]
    if present and len(present) < len(_OIDC_REQUIRED):
        missing = [env_name(f) for f in _OIDC_REQUIRED if f not in values]
        raise ConfigError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required with "
            f"{', '.join(env_name(f) for f in present)} (company sign-in needs the issuer, "
            "the client id and the client secret)"
        )
    if not present:
        for field in _OIDC_OPTIONAL:
            if field in values:
                raise ConfigError(
                    f"{env_name(field)} is set but MUSTER_OIDC_ISSUER is not: "
                    "company sign-in is off"
                )


_PARSERS: dict[str, Callable[[str], Any]] = {
    "redis_url": _redis_url,
    "rq_redis_url": _rq_url,
    "api_host": str,
    "api_port": _int(1, 65535),
    "api_workers": _int(1, 64),
    "metrics_address": _address,
    "redis_connections": _int(1, 10_000),
    "admin_token": _secret("the admin password"),
    "scim_token": _secret("the directory's password"),
    "partitions": _int(1, 1024),
    "up_delivery_workers": _int(1, 64),
    "max_post_chars": _int(1, 100_000),
    "max_body_bytes": _int(1024, 64 * 1024 * 1024),
    "max_lag": _int(1, 1 << 40),
    "smtp_url": _url("smtp", "smtps"),
    "mail_from": _email,
    "sms_provider": _choice("log", "twilio"),
    "twilio_base_url": _url("http", "https"),
    "twilio_account_sid": str,
    "twilio_auth_token": str,
    "twilio_from": str,
    "webhook_allow_private": _bool,
    "data_dir": Path,
    "env_file": Path,
    "archive_dir": Path,
    "archive_segment_bytes": _int(4096, 1 << 40),
    "embedded_fsync": _choice("always", "everysec"),
    "log_format": _choice("auto", "json", "console"),
    "log_level": _choice("debug", "info", "warning", "error"),
    "consumer_batch": _int(1, 10_000),
    "consumer_block_ms": _int(10, 60_000),
    "claim_idle_ms": _int(100, 24 * 3600 * 1000),
    "max_attempts": _int(1, 1000),
    "timeline_max": _int(10, 100_000),
    "fanout_on_read_threshold": _int(1, 1 << 40),
    "live_retention": _int(100, 100_000_000),
    "public_url": _url("http", "https"),
    "delivery_retry_schedule": _seconds_list,
    "delivery_concurrency": _int(1, 100_000),
    "webhook_timeout_s": _int(1, 300),
    "smtp_connections": _int(1, 256),
    "http_host_connections": _int(1, 10_000),
    "failpoints": _names,
    "group_dead_after_s": _int(60, 1 << 40),
    "write_replicas": _int(0, 16),
    "write_wait_ms": _int(1, 60_000),
    "stream_retention_s": _int(0, 1 << 40),
    "oidc_issuer": _issuer,
    "oidc_client_id": str,
    "oidc_client_secret": _client_secret,
    "oidc_claim": _claim,
    "oidc_allowed_domains": _domains,
    "oidc_name": str,
    "subscribe_rate": _int(1, 1_000_000),
    "subscribe_address_rate": _int(1, 1_000_000),
    "subscribe_daily_confirmations": _int(1, 1_000),
    "mail_in_secret": _secret("the key of every reply address"),
    "mail_in_domain": _domain,
    "mail_in_address": _address,
    "mail_in_max_bytes": _int(1024, 100 * 1024 * 1024),
    "mail_in_reply_days": _int(1, 3650),
    "mailgun_signing_key": _client_secret,
    "mail_in_tls_cert": _readable_file,
    "mail_in_tls_key": _readable_file,
}


def env_name(field: str) -> str:
    """The environment variable that sets `field` (stream_retention_s → MUSTER_STREAM_RETENTION)."""
    return "MUSTER_" + field.removesuffix("_s").upper()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every MUSTER_ variable; raise ConfigError naming the first bad one."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field, parse in _PARSERS.items():
        name = env_name(field)
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} {exc}") from None
    if "public_url" not in values and ("api_host" in values or "api_port" in values):
        defaults = Settings()
        values["public_url"] = local_url(
            values.get("api_host", defaults.api_host), values.get("api_port", defaults.api_port)
        )
    if "archive_dir" not in values and "data_dir" in values:
        values["archive_dir"] = values["data_dir"] / "archive"
    if values.get("sms_provider") == "twilio":
        for field in ("twilio_account_sid", "twilio_auth_token", "twilio_from"):
            if field not in values:
                raise ConfigError(f"{env_name(field)} is required when MUSTER_SMS_PROVIDER=twilio")
    if "smtp_url" in values and "mail_from" not in values:
        raise ConfigError("MUSTER_MAIL_FROM is required when MUSTER_SMTP_URL is set")
    _check_oidc(values)
    if ("mail_in_tls_cert" in values) != ("mail_in_tls_key" in values):
        raise ConfigError(
            "MUSTER_MAIL_IN_TLS_CERT and MUSTER_MAIL_IN_TLS_KEY go together (STARTTLS for "
            "mail-in needs the certificate and its key)"
        )
    for field in ("mail_in_address", "mailgun_signing_key"):
        if values.get(field) and "mail_in_secret" not in values:
            raise ConfigError(
                f"MUSTER_MAIL_IN_SECRET is required with {env_name(field)}: replies are "
                "taken only at reply addresses made with it"
            )
    return Settings(**values)


def local_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches an API listening on host:port: the default
    MUSTER_PUBLIC_URL follows MUSTER_API_HOST and MUSTER_API_PORT (a wildcard address is
    reached as localhost)."""
    if host in {"", "0.0.0.0", "::"}:  # noqa: S104 - a listen address being translated
        host = "localhost"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def env_file_of(environ: Mapping[str, str]) -> Path:
    """The `.env` file a command reads before its settings (MUSTER_ENV_FILE, else `.env` in
    the working directory): called before load_settings, since the file may set the others."""
    return Path(environ.get(env_name("env_file")) or Settings().env_file)


def known_variables() -> list[str]:
    """Every MUSTER_ variable Settings reads (docs/operations.md and the compose file are checked against it)."""
    return [env_name(field) for field in _PARSERS]
