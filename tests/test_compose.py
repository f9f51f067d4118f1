"""docker-compose.yml deploys safely: one test per property of issue 12.

No Docker engine exists on these machines, so the file is parsed with PyYAML and checked as data.
Variable interpolation is compose's own (`${VAR:?msg}`, `$$` a literal dollar), read from every
string value of the parsed file (compose does not interpolate comments).
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict = COMPOSE["services"]

# Long-running servers (everything but one-shot jobs) and the ones that are Qdrant or Postgres.
JOBS = {"publish"}
SERVERS = {name: s for name, s in SERVICES.items() if name not in JOBS}
QDRANTS = {
    name: s for name, s in SERVICES.items() if s.get("image", "").startswith("qdrant/qdrant:")
}
POSTGRESES = {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("postgres:")}

SECRET_NAME = re.compile(r"(API_KEY|PASSWORD|SECRET|TOKEN)", re.IGNORECASE)
# A compose interpolation: `$$` escapes a dollar, so only an odd run of `$` starts one.
INTERPOLATION = re.compile(
    r"(?<!\$)(?:\$\$)*\$(\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
REQUIRED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*):\?(?P<message>.+)$")


def interpolations(text: str) -> list[str]:
    """The `${...}` / `$VAR` expressions compose would substitute in `text`."""
    found = []
    for m in INTERPOLATION.finditer(text):
        found.append(m.group("braced") if m.group("braced") is not None else m.group("bare"))
    return found


def strings(node) -> list[str]:
    """Every string value (and key) in the parsed file: what compose interpolates."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


ALL_INTERPOLATIONS = [e for text in strings(COMPOSE) for e in interpolations(text)]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_the_expected_services_exist():
    assert {"qdrant", "postgres", "publish"} <= set(SERVICES)
    assert QDRANTS and POSTGRESES


def test_every_published_port_is_bound_to_localhost():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert SERVICES["qdrant"]["ports"] and SERVICES["postgres"]["ports"]


def test_secrets_are_required_from_the_environment_with_no_default():
    secrets = 0
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            if not SECRET_NAME.search(key):
                continue
            secrets += 1
            exprs = interpolations(value)
            assert exprs, f"{name}.{key} is a literal secret: {value!r}"
            for expr in exprs:
                assert REQUIRED.match(expr), f"{name}.{key}: ${{{expr}}} must be ${{VAR:?message}}"
    assert secrets >= 3  # qdrant's key, postgres's password, the publish job's key
    # The database URL carries the password: it must come from a required variable too.
    url = environment(SERVICES["publish"])["FMSTORE_DATABASE_URL"]
    assert [REQUIRED.match(e)["name"] for e in interpolations(url)] == ["POSTGRES_PASSWORD"]


def test_no_variable_anywhere_has_a_default_or_may_be_empty():
    assert ALL_INTERPOLATIONS
    for expr in ALL_INTERPOLATIONS:
        m = REQUIRED.match(expr)
        assert m, f"${{{expr}}}: every variable must be required, ${{VAR:?message}}"
        assert m["message"].strip(), expr


def test_the_servers_required_secrets_are_the_ones_the_images_read():
    assert REQUIRED.match(
        interpolations(environment(SERVICES["qdrant"])["QDRANT__SERVICE__API_KEY"])[0]
    )
    assert REQUIRED.match(interpolations(environment(SERVICES["postgres"])["POSTGRES_PASSWORD"])[0])
    assert "POSTGRES_HOST_AUTH_METHOD" not in environment(SERVICES["postgres"])  # no "trust"


def test_env_example_names_every_required_variable_with_a_placeholder():
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    required = {REQUIRED.match(e)["name"] for e in ALL_INTERPOLATIONS}
    assert required == {"QDRANT_API_KEY", "POSTGRES_PASSWORD"}
    assert required <= set(example), required - set(example)
    for key in required:
        assert example[key], f".env.example: {key} needs a placeholder value"


def test_servers_have_healthchecks():
    for name, service in {**QDRANTS, **POSTGRESES}.items():
        check = service.get("healthcheck")
        assert check and check.get("test"), name
        assert not check.get("disable"), name
        assert {"interval", "timeout", "retries"} <= set(check), name
    for name, service in QDRANTS.items():
        probe = " ".join(service["healthcheck"]["test"])
        # the qdrant image has bash but no curl/wget/nc: the probe must use bash's /dev/tcp
        assert "/dev/tcp/127.0.0.1/6333" in probe and "/readyz" in probe, name
        assert not re.search(r"\b(curl|wget|nc)\b", probe), name
    for name, service in POSTGRESES.items():
        assert "pg_isready" in service["healthcheck"]["test"], name


def test_servers_restart_unless_stopped():
    for name, service in SERVERS.items():
        assert service.get("restart") == "unless-stopped", name
    assert SERVICES["publish"].get("restart", "no") == "no"  # a job runs once


def _tag(image: str) -> str:
    assert ":" in image.rsplit("/", 1)[-1], f"{image}: no tag"
    return image.rsplit(":", 1)[1]


def test_images_are_pinned():
    for name, service in SERVICES.items():
        tag = _tag(service["image"])
        assert tag and "latest" not in tag, (name, service["image"])
    for name, service in POSTGRESES.items():
        assert re.fullmatch(r"\d+\.\d+(-[a-z0-9.]+)?", _tag(service["image"])), (
            f"{name}: pin Postgres to a minor release, e.g. postgres:15.18"
        )
    for name, service in QDRANTS.items():
        assert re.fullmatch(r"v\d+\.\d+\.\d+", _tag(service["image"])), name
    if "build" in SERVICES["publish"]:
        base = re.search(r"^FROM\s+(\S+)", SERVICES["publish"]["build"]["dockerfile_inline"], re.M)
        assert base and "latest" not in _tag(base[1])


def test_qdrant_server_is_within_one_minor_of_the_client():
    client = tuple(int(x) for x in version("qdrant-client").split(".")[:2])
    pyproject = (ROOT / "pyproject.toml").read_text()
    spec = re.search(r'"qdrant-client>=(\d+)\.(\d+)', pyproject)
    assert spec, "pyproject.toml must bound qdrant-client from below"
    assert client >= (int(spec[1]), int(spec[2]))  # the installed client is one the package allows
    for name, service in QDRANTS.items():
        major, minor, _ = (int(x) for x in _tag(service["image"])[1:].split("."))
        assert major == client[0] and abs(minor - client[1]) <= 1, (
            f"{name}: server {service['image']} vs qdrant-client {version('qdrant-client')}"
        )
    assert len({s["image"] for s in QDRANTS.values()}) == 1  # one version everywhere


def test_publish_job_waits_for_healthy_servers_and_gets_its_settings_from_the_environment():
    job = SERVICES["publish"]
    assert job.get("profiles") == ["publish"]  # not started by a plain `docker compose up`
    deps = job["depends_on"]
    assert deps["qdrant"]["condition"] == "service_healthy"
    assert deps["postgres"]["condition"] == "service_healthy"
    command = job.get("command") or job.get("entrypoint")
    assert command[:2] == ["fmstore", "publish"]
    env = environment(job)
    assert env["FMSTORE_QDRANT_URL"] == "http://qdrant:6333"
    assert env["FMSTORE_DATABASE_URL"].startswith("postgresql://fmstore:")
    assert env["FMSTORE_DATABASE_URL"].endswith("@postgres:5432/fmstore")
    assert (
        REQUIRED.match(interpolations(env["FMSTORE_QDRANT_API_KEY"])[0])["name"] == "QDRANT_API_KEY"
    )


def test_three_node_qdrant_cluster_profile():
    nodes = {name: s for name, s in QDRANTS.items() if "cluster" in s.get("profiles", [])}
    assert len(nodes) == 3
    uris, bootstraps = [], []
    for service in nodes.values():
        env = environment(service)
        assert env["QDRANT__CLUSTER__ENABLED"] == "true"
        assert REQUIRED.match(interpolations(env["QDRANT__SERVICE__API_KEY"])[0])
        args = service["command"]
        uris.append(args[args.index("--uri") + 1])
        if "--bootstrap" in args:
            bootstraps.append(args[args.index("--bootstrap") + 1])
    assert len(set(uris)) == 3
    assert len(bootstraps) == 2 and len(set(bootstraps)) == 1 and bootstraps[0] in uris
    assert "profiles" not in SERVICES["qdrant"]  # the single node is the default
