"""The operations files tell the truth: docker-compose.yml, deploy/, .ci/run and the README.

Docker cannot run where these tests run, so the compose file, the Dockerfile and the systemd
units are checked as data against the code they start: every command is one the `muster`
parser accepts, every MUSTER_ name is a setting Muster reads and the values set there load,
no secret is written down, and Redis is configured for durability (deploy/redis.conf is also
loaded by a real redis-server, which must keep an acknowledged write across a kill -9). The
the configuration table and metrics of docs/operations.md and the README's checks are compared with settings.py, the metrics
registry and .ci/run, so none of them can drift from what the code does.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from redis_server import RedisServer, redis_server_binary

from muster.api.metrics import Metrics, SystemCollector
from muster.cli import OPS_WORKER, WORKER_KINDS, build_parser
from muster.settings import Settings, env_name, known_variables, load_settings
from muster.supervisor import CHILDREN, MAIL_IN

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
REDIS_CONF = ROOT / "deploy" / "redis.conf"
SYSTEMD = ROOT / "deploy" / "systemd"
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
CI = ROOT / ".ci" / "run"

REDIS_URL_IN_COMPOSE = "redis://redis:6379/0"
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|AUTH")
MUSTER_NAME = re.compile(r"\bMUSTER_[A-Z0-9_]*[A-Z0-9]")
ADMIN_TOKEN = "k3Jq9-vXa_Lr2ZpT8mWc4NbYe6HsUd0F"  # what an operator exports; 32 random characters


# --- reading the files --------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


CLUSTER_PROFILE = "cluster"
MAIL_PROFILE = "mail"
"""`docker compose --profile mail`: mail-in, which needs MUSTER_MAIL_IN_SECRET and port 25."""


def services(profile: str | None = None) -> dict[str, dict[str, Any]]:
    """Compose services that `docker compose up` starts (profile None), or that only
    `--profile <profile>` adds."""
    wanted = [] if profile is None else [profile]
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("profiles", []) == wanted
    }


def muster_services(profile: str | None = None) -> dict[str, dict[str, Any]]:
    """Compose services that run a `muster` command (all but Redis)."""
    return {
        name: service
        for name, service in services(profile).items()
        if service.get("command", [None])[0] == "muster"
    }


class MissingVariable(Exception):
    """A `${NAME:?message}` interpolation met an unset variable, as `docker compose` would."""


_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: object, host: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?err}`, `${NAME?err}`."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = host.get(name)
        if value is not None and (value != "" or op is None or not op.startswith(":")):
            return value
        if op is None:
            return ""
        if op.endswith("?"):
            raise MissingVariable(f"{name}: {arg}")
        return str(arg)

    return _INTERPOLATION.sub(substitute, str(value))


def environment(service: Mapping[str, Any], host: Mapping[str, str]) -> dict[str, str]:
    raw = service.get("environment") or {}
    assert isinstance(raw, dict), "use the mapping form of `environment:`"
    return {name: interpolate(value, host) for name, value in raw.items()}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in logical.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def redis_conf() -> dict[str, str]:
    """Directive → value; a later directive wins, as in Redis."""
    directives: dict[str, str] = {}
    for line in REDIS_CONF.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, _, value = stripped.partition(" ")
            directives[name.lower()] = value.strip()
    return directives


def systemd_exec_starts() -> Iterator[tuple[str, list[str]]]:
    """(unit, argv) for each ExecStart, with a template's %i replaced by each worker kind."""
    for unit in sorted(SYSTEMD.glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.removeprefix("ExecStart="))
                instances = WORKER_KINDS if "%i" in line else ("",)
                for instance in instances:
                    yield unit.name, [arg.replace("%i", instance) for arg in argv]


def readme_section(title: str, document: Path = README) -> str:
    match = re.search(
        rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", document.read_text(), re.M | re.S
    )
    assert match, f"{document.name} has no '## {title}' section"
    return match[1]


def code_blocks(text: str) -> list[list[str]]:
    """Fenced blocks as lists of commands (blank lines and trailing `# comments` dropped)."""
    blocks = []
    for body in re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S):
        lines = [re.sub(r"\s+#.*$", "", line).strip() for line in body.splitlines()]
        blocks.append([line for line in lines if line])
    return blocks


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the first Markdown table in `text`, as stripped cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = lines[start:end]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


def ci_steps() -> list[str]:
    return [m[1] for m in re.finditer(r"^step (.+)$", CI.read_text(), re.M)]


def parse_muster(argv: list[str]) -> argparse.Namespace:
    """What `muster` would do with `argv`; fail the test where the parser would refuse it."""
    assert argv[:1] == ["muster"] or argv[0].endswith("/muster"), f"not a muster command: {argv}"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"`{shlex.join(argv)}` is not a muster command (see `muster --help`)")


# --- processes ---------------------------------------------------------------------------------
def deployed_commands() -> list[tuple[str, list[str]]]:
    found = [
        (f"compose {name}", service["command"])
        for profile in (None, CLUSTER_PROFILE, MAIL_PROFILE)
        for name, service in muster_services(profile).items()
    ]
    found += [
        ("Dockerfile CMD", yaml.safe_load(args))
        for keyword, args in dockerfile()
        if keyword == "CMD"
    ]
    found += list(systemd_exec_starts())
    return found


@pytest.mark.parametrize(("where", "argv"), deployed_commands(), ids=lambda v: str(v))
def test_every_deployed_command_is_a_real_muster_subcommand(where: str, argv: list[str]) -> None:
    args = parse_muster(argv)
    assert callable(args.run), where


def test_compose_runs_the_processes_muster_up_runs() -> None:
    commands = {tuple(service["command"][1:]) for service in muster_services().values()}
    assert commands == set(CHILDREN)
    assert {("worker", kind) for kind in WORKER_KINDS} <= commands
    # A new service folder needs its own worker kind (and so its own compose service); `ops`
    # is the rq worker (`muster worker ops`), `cli` the `muster` command that starts them all.
    service_dirs = {path.name for path in (ROOT / "services").iterdir() if path.is_dir()}
    assert service_dirs - {"api", "cli"} == {*WORKER_KINDS, OPS_WORKER}
    assert ("worker", OPS_WORKER) in commands
    # mail-in, which `muster up` runs when MUSTER_MAIL_IN_ADDRESS is set, is opt-in here too
    mail = {tuple(service["command"][1:]) for service in muster_services(MAIL_PROFILE).values()}
    assert mail == {MAIL_IN}


def test_only_redis_runs_something_other_than_muster() -> None:
    assert set(services()) - set(muster_services()) == {"redis"}


def test_every_service_is_in_the_default_set_or_the_cluster_profile() -> None:
    for name, service in compose()["services"].items():
        assert service.get("profiles", []) in ([], [CLUSTER_PROFILE], [MAIL_PROFILE]), name
    every = set(services()) | set(services(CLUSTER_PROFILE)) | set(services(MAIL_PROFILE))
    assert every == set(compose()["services"])


# --- compose: shape ----------------------------------------------------------------------------
def test_muster_services_build_the_image_and_wait_for_a_healthy_redis() -> None:
    for name, service in muster_services().items():
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert service["restart"] in {"always", "unless-stopped"}, name
        env = environment(service, {"MUSTER_ADMIN_TOKEN": ADMIN_TOKEN})
        assert env["MUSTER_REDIS_URL"] == REDIS_URL_IN_COMPOSE, name


def test_redis_service_is_durable_private_and_health_checked() -> None:
    redis = compose()["services"]["redis"]
    assert re.fullmatch(r"redis:7(\.\d+)*(-\w+)?", redis["image"])
    assert redis["restart"] in {"always", "unless-stopped"}
    assert "ping" in redis["healthcheck"]["test"]
    assert "ports" not in redis, "Redis must not be published outside the compose network"
    conf_in_container = redis["command"][1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis["volumes"]}
    assert mounts[conf_in_container] == "./deploy/redis.conf"
    assert mounts[redis_conf()["dir"]] in compose()["volumes"], "Redis data needs a named volume"


def test_api_listens_on_all_interfaces_of_its_container_with_a_healthcheck() -> None:
    api = muster_services()["api"]
    env = environment(api, {"MUSTER_ADMIN_TOKEN": ADMIN_TOKEN})
    assert env["MUSTER_API_HOST"] == "0.0.0.0"
    port = env.get("MUSTER_API_PORT", str(Settings().api_port))
    assert port == "8000"
    assert any(str(mapping).endswith(f":{port}") for mapping in api["ports"])
    probe = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in probe


def test_audit_archive_is_on_a_volume() -> None:
    audit = muster_services()["worker-audit"]
    archive = environment(audit, {}).get("MUSTER_ARCHIVE_DIR")
    assert archive is not None
    volumes = {v.split(":")[1]: v.split(":")[0] for v in audit["volumes"]}
    assert volumes[archive] in compose()["volumes"]


# --- compose: configuration --------------------------------------------------------------------
def test_every_muster_variable_in_deploy_files_is_a_setting() -> None:
    known = set(known_variables())
    files = [COMPOSE, DOCKERFILE, ROOT / "deploy" / "redis-cluster.md", README]
    files += sorted(SYSTEMD.glob("*.service"))
    for path in files:
        unknown = set(MUSTER_NAME.findall(path.read_text())) - known
        assert not unknown, f"{path.relative_to(ROOT)} names settings Muster does not read"


@pytest.mark.parametrize("name", sorted(muster_services()))
def test_compose_environment_loads_as_settings(name: str) -> None:
    host = {"MUSTER_ADMIN_TOKEN": ADMIN_TOKEN}
    settings = load_settings(environment(muster_services()[name], host))
    assert settings.redis_url == REDIS_URL_IN_COMPOSE
    assert settings.mail_in_secret is None  # replies by email are off until it is set


def test_compose_mail_in_listens_with_the_hosts_secret() -> None:
    (mail_in,) = muster_services(MAIL_PROFILE).values()
    with pytest.raises(MissingVariable, match="MUSTER_MAIL_IN_SECRET"):
        environment(mail_in, {})
    secret = "mail-in-" + ADMIN_TOKEN
    settings = load_settings(environment(mail_in, {"MUSTER_MAIL_IN_SECRET": secret}))
    assert (settings.mail_in_address, settings.mail_in_secret) == ("0.0.0.0:2525", secret)
    assert mail_in["ports"] == ["25:2525"]
    for name, service in muster_services().items():  # the others sign and check with it
        env = environment(
            service, {"MUSTER_ADMIN_TOKEN": ADMIN_TOKEN, "MUSTER_MAIL_IN_SECRET": secret}
        )
        assert load_settings(env).mail_in_secret == secret, name


def test_admin_token_comes_from_the_host_and_is_required() -> None:
    api = muster_services()["api"]
    assert re.fullmatch(
        r"\$\{MUSTER_ADMIN_TOKEN:\?[^}]+\}", api["environment"]["MUSTER_ADMIN_TOKEN"]
    )
    with pytest.raises(MissingVariable, match="MUSTER_ADMIN_TOKEN"):
        environment(api, {})
    env = environment(api, {"MUSTER_ADMIN_TOKEN": ADMIN_TOKEN})
    assert env["MUSTER_ADMIN_TOKEN"] == ADMIN_TOKEN


def test_no_secret_is_written_into_the_deploy_files() -> None:
    for name, service in compose()["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(variable):
                # Only the host's value, never a default: ${NAME}, ${NAME:-}, ${NAME:?why}.
                pattern = rf"\$\{{{variable}(:?-|:?\?[^}}]*)?\}}"
                assert re.fullmatch(pattern, str(value)), f"{name}: {variable} is hard-coded"
    for keyword, args in dockerfile():
        if keyword in {"ENV", "ARG"}:
            assert not SECRET_NAME.search(args), f"Dockerfile {keyword} {args}"
    for unit in SYSTEMD.glob("*.service"):
        for line in unit.read_text().splitlines():
            if line.startswith("Environment="):
                assert not SECRET_NAME.search(line), f"{unit.name}: {line}"
    conf = redis_conf()
    assert "requirepass" not in conf
    assert "masterauth" not in conf
    assert "requirepass" not in COMPOSE.read_text()


# --- compose: the cluster profile ---------------------------------------------------------------
def _flags(command: list[str]) -> dict[str, str]:
    """`--name value` pairs of a redis-server command line."""
    return {
        command[i].removeprefix("--"): command[i + 1]
        for i in range(1, len(command) - 1)
        if command[i].startswith("--")
    }


def cluster_nodes() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services(CLUSTER_PROFILE).items()
        if service.get("command", [None])[0] == "redis-server"
    }


def test_cluster_profile_runs_three_durable_private_cluster_nodes() -> None:
    nodes = cluster_nodes()
    assert len(nodes) >= 3, "a Redis Cluster needs at least three masters"
    for name, node in nodes.items():
        assert re.fullmatch(r"redis:7(\.\d+)*(-\w+)?", node["image"]), name
        flags = _flags(node["command"])
        assert flags["cluster-enabled"] == "yes", name
        assert flags["appendonly"] == "yes", name
        assert flags["appendfsync"] == "always", name
        assert flags["maxmemory-policy"] == "noeviction", name
        assert "ports" not in node, f"{name} must not be published outside the compose network"
        assert "ping" in node["healthcheck"]["test"], name
        data = {v.split(":")[1]: v.split(":")[0] for v in node["volumes"]}
        assert data[flags["dir"]] in compose()["volumes"], f"{name}: data needs a named volume"
    volumes = [node["volumes"][0] for node in nodes.values()]
    assert len(set(volumes)) == len(volumes), "every node keeps its own data"


def test_cluster_profile_joins_every_node_once_they_are_healthy() -> None:
    jobs = {
        name: service
        for name, service in services(CLUSTER_PROFILE).items()
        if "--cluster create" in " ".join(service.get("command", []))
    }
    assert len(jobs) == 1
    (job,) = jobs.values()
    assert job["restart"] == "no"
    nodes = cluster_nodes()
    assert {n: {"condition": "service_healthy"} for n in nodes} == job["depends_on"]
    script = job["command"][-1]
    for name in nodes:
        assert name in script, f"the cluster create job leaves out {name}"
    assert "cluster_state:ok" in script, "an existing cluster is left alone, a new one awaited"


def test_cluster_profile_muster_points_at_the_cluster_and_rq_at_one_redis() -> None:
    (name, muster), *others = muster_services(CLUSTER_PROFILE).items()
    assert not others
    assert tuple(muster["command"][1:]) == ("up",)
    (job,) = (n for n in services(CLUSTER_PROFILE) if n not in cluster_nodes() and n != name)
    assert muster["depends_on"][job] == {"condition": "service_completed_successfully"}
    assert muster["depends_on"]["redis"] == {"condition": "service_healthy"}
    settings = load_settings(environment(muster, {"MUSTER_ADMIN_TOKEN": ADMIN_TOKEN}))
    cluster = settings.redis_cluster
    assert cluster is not None, "MUSTER_REDIS_URL must name the cluster (redis+cluster://)"
    assert {host for host, _ in cluster.nodes} == set(cluster_nodes())
    assert settings.partitions >= len(cluster_nodes()), "fewer partitions than masters"
    assert settings.rq_url is not None
    assert settings.rq_url.startswith("redis://redis:6379/"), "rq has no cluster mode"
    ports = {str(mapping).rsplit(":", 1)[1] for mapping in muster["ports"]}
    assert {str(settings.api_port), "9464"} <= ports
    published = {str(mapping).rsplit(":", 1)[0] for mapping in muster["ports"]}
    ours = {str(m).rsplit(":", 1)[0] for m in muster_services()["api"]["ports"]}
    assert not published & ours, "the cluster profile's ports clash with the api's"


# --- Redis configuration -----------------------------------------------------------------------
def test_redis_conf_keeps_every_acknowledged_write() -> None:
    conf = redis_conf()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "always"
    assert conf["no-appendfsync-on-rewrite"] == "no"
    assert conf["maxmemory-policy"] == "noeviction"


class ConfiguredRedis(RedisServer):
    """A redis-server reading deploy/redis.conf, confined to loopback and a temp dir.

    Redis changes into `dir` while it reads the file, before any command-line override, so
    the copy it reads has that one line pointed at the temp dir; every other line is as shipped.
    """

    def command(self) -> list[str]:
        conf = self.directory / "redis.conf"
        if not conf.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            text = re.sub(r"^dir .*$", f"dir {self.directory}", REDIS_CONF.read_text(), flags=re.M)
            conf.write_text(text)
        return [
            redis_server_binary(),
            str(conf),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
        ]  # fmt: skip


def test_redis_conf_loads_and_an_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    with ConfiguredRedis(tmp_path / "redis") as server:
        with server.client() as client:
            config = client.config_get("*")
            assert config["appendonly"] == "yes"
            assert config["appendfsync"] == "always"
            assert config["maxmemory-policy"] == "noeviction"
            client.xadd("muster:{p0}:events", {"e": b"accepted"})
        server.restart(crash=True)
        with server.client() as client:
            entries = client.xrange("muster:{p0}:events")
            assert [fields for _, fields in entries] == [{b"e": b"accepted"}]


# --- Dockerfile ----------------------------------------------------------------------------------
def test_dockerfile_builds_on_python_3_11_or_newer_and_runs_as_a_user() -> None:
    instructions = dockerfile()
    bases = [args for keyword, args in instructions if keyword == "FROM"]
    assert bases
    for base in bases:
        match = re.fullmatch(r"python:3\.(\d+)(\.\d+)?(-slim[-\w]*)?(\s+AS\s+\w+)?", base, re.I)
        assert match, f"unexpected base image {base}"
        assert int(match[1]) >= 11, base
    assert any(keyword == "RUN" and "pip install ." in args for keyword, args in instructions)
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_copies_every_part_of_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["sources"]
    copied: list[str] = []
    for keyword, args in dockerfile():
        if keyword == "COPY" and not args.startswith("--from"):
            copied += [src.rstrip("/") for src in args.split()[:-1]]
    for root in [*roots, "pyproject.toml", pyproject["project"]["readme"]]:
        assert any(root == src or root.startswith(src + "/") for src in copied), root
    # ...and the build context filter lets each of them through.
    allowed = {
        line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line[:1] == "!"
    }
    assert set(copied) <= allowed


# --- README ------------------------------------------------------------------------------------
def _expected_default(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):  # csv settings, written as the variable takes them
        return ",".join(str(v) for v in value) or None
    return str(value)


def test_readme_configuration_table_lists_every_setting_with_its_default() -> None:
    rows = table_rows(readme_section("Configuration", OPERATIONS))
    documented = [MUSTER_NAME.search(row[0]) for row in rows]
    names = [match[0] for match in documented if match]
    assert len(names) == len(rows), "every row starts with one MUSTER_ variable"
    assert sorted(names) == sorted(set(names)), "a variable is listed twice"
    assert set(names) == set(known_variables())
    defaults = {env_name(field.name): field.default for field in msgspec.structs.fields(Settings)}
    for name, row in zip(names, rows, strict=True):
        expected = _expected_default(defaults[name])
        if expected is None:
            assert row[1].startswith("unset"), f"{name}: default is unset"
        else:
            assert f"`{expected}`" in row[1], f"{name}: default is {expected}"
        assert row[2], f"{name} needs a meaning"


def test_readme_metrics_are_the_ones_served() -> None:
    served = set()
    for family in [*Metrics().registry.collect(), *SystemCollector(Settings()).describe()]:
        served.add(family.name + ("_total" if family.type == "counter" else ""))
    documented = {
        row[0].strip("`").split("{")[0]
        for row in table_rows(readme_section("Operations", OPERATIONS))
    }
    assert documented == served


def test_readme_shows_install_muster_up_and_the_test_command() -> None:
    blocks = code_blocks(readme_section("Quick start"))
    commands = [command for block in blocks for command in block]
    assert any("pip install -e '.[dev]'" in command for command in commands)
    assert "muster up" in commands
    assert commands[-1] == "pytest"


def test_ci_runs_the_readme_install_and_checks_in_order() -> None:
    steps = ci_steps()
    install = "pip install -e '.[dev]'"
    assert install in steps
    checks = code_blocks(readme_section("Checks"))[0]
    assert steps[steps.index(install) + 1 :] == checks
    assert checks[-1] == code_blocks(readme_section("Quick start"))[-1][-1]  # the test command


def test_ci_script_is_strict_executable_bash() -> None:
    text = CI.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(CI, os.X_OK)
    subprocess.run(["bash", "-n", str(CI)], check=True, timeout=30)
