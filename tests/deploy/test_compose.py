"""docker-compose.yml, .env.example, the Dockerfile and .dockerignore, checked without a Docker
engine: Compose validates the file; every command a service runs is a real command of the
project or of Prefect; every variable it reads is a known setting; nothing secret is committed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import prefect.settings
import pytest
from sqlalchemy.engine import make_url

from settings import Settings
from tests.deploy.compose import (
    COMPOSE_FILE,
    DOCKERIGNORE,
    ENV_EXAMPLE,
    HOST_NETWORK_FILE,
    POSTGRES_INIT,
    PUBLISH_FILE,
    ROOT,
    command_line,
    command_path,
    compose,
    dockerfile_args,
    dockerfile_stages,
    env_file,
    environment,
    help_text,
    interpolate,
    interpolated_names,
    override,
    services,
    simple_commands,
    strings,
)

PASSWORDS = ("POSTGRES_PASSWORD", "PG_PREFECT_PASSWORD", "PG_APP_PASSWORD", "PG_READER_PASSWORD")
PROJECT_IMAGE_SERVICES = {"prefect-server", "migrate", "deploy", "worker-cpu", "worker-gpu"}
# what the postgres image and its init script read; not settings of the project or of Prefect
POSTGRES_IMAGE_VARIABLES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


def filled_env() -> dict[str, str]:
    """.env.example with a made-up value for each password, as an operator fills it."""
    values = env_file(ENV_EXAMPLE)
    passwords = {name: f"test{name.lower().replace('_', '')}" for name in PASSWORDS}
    return {**values, **passwords, "SERVER_AUTH": "operator:testserverauth"}


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def run_compose_config(
    env_path: Path, files: tuple[Path, ...] = (COMPOSE_FILE,)
) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip(
            "neither `docker compose` (the Compose plugin) nor `docker-compose` is installed; "
            "on Debian: apt-get install -y docker-compose"
        )
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [*command, "--env-file", str(env_path), *(f"-f{file}" for file in files), "config", "-q"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_config_passes_with_the_documented_env(tmp_path):
    env_path = tmp_path / "filled.env"
    env_path.write_text("".join(f"{key}={value}\n" for key, value in filled_env().items()))
    for files in [(COMPOSE_FILE, PUBLISH_FILE), (COMPOSE_FILE, HOST_NETWORK_FILE)]:
        done = run_compose_config(env_path, files)
        assert done.returncode == 0, (files, done.stderr)
    # the passwords are required: the unfilled example must be refused, naming the variable
    done = run_compose_config(ENV_EXAMPLE)
    assert done.returncode != 0
    assert re.search(r"set (POSTGRES|PG_\w+)_PASSWORD in \.env", done.stderr), done.stderr


def test_services_start_in_order_and_restart():
    depends = {
        name: {dep: spec["condition"] for dep, spec in service.get("depends_on", {}).items()}
        for name, service in services().items()
    }
    assert depends == {
        "postgres": {},
        "prefect-server": {"postgres": "service_healthy"},
        "migrate": {"postgres": "service_healthy"},
        "deploy": {
            "prefect-server": "service_healthy",
            "migrate": "service_completed_successfully",
        },
        "worker-cpu": {
            "prefect-server": "service_healthy",
            "deploy": "service_completed_successfully",
        },
        "worker-gpu": {
            "prefect-server": "service_healthy",
            "deploy": "service_completed_successfully",
        },
    }
    for name, service in services().items():
        one_shot = name in {"migrate", "deploy"}
        assert service["restart"] == ("no" if one_shot else "unless-stopped"), name
        if not one_shot and name != "worker-gpu":
            assert "healthcheck" in service, f"{name} has no healthcheck"
        if name in PROJECT_IMAGE_SERVICES:
            assert service["build"]["context"] == "."
    postgres = services()["postgres"]
    image = interpolate(postgres["image"], {})  # the default: Docker Hub's
    assert re.fullmatch(r"postgres:15\.\d+[-\w]*", image), postgres["image"]
    assert any(v.startswith("pgdata:") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert set(compose()["volumes"]) >= {"pgdata"}


@pytest.mark.slow  # one `--help` subprocess per command path
def test_every_service_command_is_a_real_command_of_the_project_or_prefect():
    runs: list[tuple[str, list[str], list[str], list[str]]] = []
    for name, service in services().items():
        if name == "postgres":
            assert "command" not in service  # the image's own entrypoint
            continue
        commands = simple_commands(service)
        assert commands, f"{name} has no command"
        for tokens in commands:
            assert tokens[0] in {"cdd-forecast", "prefect"}, f"{name} runs {tokens}"
            runs.append((name, *command_path(tokens)))
    paths = {tuple(path) for *_, path, _ in runs} | {("prefect",)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(help_text, sorted(paths)))
    for name, global_options, path, options in runs:
        done = help_text(tuple(path))
        assert done.returncode == 0, f"{name}: `{' '.join(path)} --help` failed: {done.stderr}"
        for option in options:
            assert option in done.stdout, f"{name}: {' '.join(path)} has no option {option}"
        for option in global_options:
            assert option in help_text((path[0],)).stdout, f"{name}: no global option {option}"
    found = {(name, " ".join(path)) for name, _, path, _ in runs}
    assert found >= {
        ("prefect-server", "prefect server start"),
        ("migrate", "cdd-forecast db upgrade"),
        ("migrate", "cdd-forecast db roles"),
        ("deploy", "prefect work-pool inspect"),
        ("deploy", "prefect work-pool create"),
        ("deploy", "prefect deploy"),
        ("deploy", "prefect work-pool set-concurrency-limit gpu"),
        ("deploy", "prefect automation create"),
        ("worker-cpu", "prefect worker start"),
        ("worker-gpu", "prefect worker start"),
    }
    migrate = [" ".join(command_path(t)[1]) for t in simple_commands(services()["migrate"])]
    assert migrate == ["cdd-forecast db upgrade", "cdd-forecast db roles"]


def test_workers_poll_the_pools_of_prefect_yaml():
    import yaml

    pools = {
        d["work_pool"]["name"]
        for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    }
    assert pools == {"cpu", "gpu"}
    for pool in pools:
        (words,) = [w for w in simple_commands(services()[f"worker-{pool}"]) if "--pool" in w]
        assert words[words.index("--pool") + 1] == pool
        assert words[words.index("--type") + 1] == "process"
    gpu_worker = [" ".join(command_path(t)[1]) for t in simple_commands(services()["worker-gpu"])]
    assert gpu_worker == ["cdd-forecast gpu-check", "prefect worker start"]  # the check first
    assert "exec prefect worker start" in command_line(services()["worker-gpu"])[-1]
    deploy_script = (ROOT / command_line(services()["deploy"])[-1]).read_text()
    assert "for pool in cpu gpu" in deploy_script and "--no-prompt deploy --all" in deploy_script
    assert 'set-concurrency-limit gpu "$gpu_count"' in deploy_script


def _known_setting(name: str) -> bool:
    if name.startswith("CDDF_"):
        field = name.removeprefix("CDDF_").lower()
        return field in Settings.model_fields
    if name.startswith("PREFECT_"):
        return hasattr(prefect.settings, name)
    return False


def test_every_variable_the_services_read_is_a_known_setting():
    read = {
        (name, variable)
        for name, service in services().items()
        for variable in environment(service)
    }
    dockerfile_env = {
        variable
        for lines in dockerfile_stages().values()
        for line in lines
        if line.startswith("ENV ")
        for variable in re.findall(r"(\w+)=", line)
    }
    assert {v for v in dockerfile_env if v.startswith(("CDDF_", "PREFECT_"))}
    unknown = sorted(
        (name, variable)
        for name, variable in read | {("Dockerfile", v) for v in dockerfile_env}
        if variable.startswith(("CDDF_", "PREFECT_")) and not _known_setting(variable)
    )
    assert not unknown, f"not settings of cdd-forecast or Prefect: {unknown}"
    others = {(name, v) for name, v in read if not v.startswith(("CDDF_", "PREFECT_"))}
    init_reads = {
        v for script in POSTGRES_INIT.iterdir() for v in interpolated_names(script.read_text())
    } | set(
        re.findall(
            r"\\getenv \w+ (\w+)", "".join(script.read_text() for script in POSTGRES_INIT.iterdir())
        )
    )
    assert others == {
        ("postgres", v) for v in POSTGRES_IMAGE_VARIABLES | (init_reads - {"POSTGRES_USER"})
    } | {
        ("deploy", "GPU_COUNT"),  # deploy/deploy.sh: the gpu pool's concurrency limit
        ("postgres", "PGPORT"),  # the port the server listens on (PG_PORT)
    }


def test_the_services_settings_parse_with_the_documented_env(monkeypatch):
    values = filled_env()
    for name in ("migrate", "worker-cpu", "worker-gpu"):
        env = {k: interpolate(v, values) for k, v in environment(services()[name]).items()}
        for key in [k for k in os.environ if k.startswith("CDDF_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        url = make_url(settings.database_url.get_secret_value())
        assert (url.drivername, url.host, url.database) == (
            "postgresql+psycopg",
            "postgres",
            "cddf",
        )
        if name == "migrate":  # the superuser, who creates the roles with these passwords
            roles = settings
            assert url.username == values["POSTGRES_USER"]
            assert roles.app_password.get_secret_value() == values["PG_APP_PASSWORD"]
            assert roles.reader_password.get_secret_value() == values["PG_READER_PASSWORD"]
        else:  # the application role, with the password the migrate step gave it
            assert (url.username, url.password) == (
                settings.app_role,
                values["PG_APP_PASSWORD"],
            )
            assert settings.series == ["Bitstamp_BTCUSD_d"]
            assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    server = {
        k: interpolate(v, values) for k, v in environment(services()["prefect-server"]).items()
    }
    url = make_url(server["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert (url.drivername, url.username, url.database) == (
        "postgresql+asyncpg",
        "prefect",
        "prefect",
    )
    assert url.password == values["PG_PREFECT_PASSWORD"]


def test_worker_gpu_requests_a_gpu_and_runs_the_gpu_image():
    gpu = services()["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices), devices
    assert gpu["build"]["target"] == "gpu" and gpu["image"].endswith(":gpu")
    assert "gpu" in gpu["profiles"]  # a host without NVIDIA runs the rest of the stack
    for name in PROJECT_IMAGE_SERVICES - {"worker-gpu"}:
        assert services()[name]["build"]["target"] == "cpu", name
        assert "deploy" not in services()[name], f"{name} should not reserve devices"


def test_no_secret_is_written_in_the_compose_file_or_the_example():
    text = COMPOSE_FILE.read_text()
    for match in re.finditer(r"://([^/\s:@]+):([^@\s]+)@", text):
        assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", match[2]), f"password literal in {match[0]}"
    for name, service in services().items():
        for key, value in environment(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", value), f"{name}: {key}={value}"
    example = env_file(ENV_EXAMPLE)
    for name in PASSWORDS:
        assert example[name] == "", f".env.example must leave {name} empty"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_env_example_documents_every_variable_compose_interpolates():
    documents = [compose(), override(PUBLISH_FILE), override(HOST_NETWORK_FILE)]
    used = {name for doc in documents for text in strings(doc) for name in interpolated_names(text)}
    documented = env_file(ENV_EXAMPLE)
    assert used == set(documented), (
        f"missing from .env.example: {sorted(used - set(documented))}; "
        f"not used by docker-compose.yml: {sorted(set(documented) - used)}"
    )
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            block = lines[max(0, number - 8) : number]
            assert any(b.startswith("# ") for b in block), f"{line.split('=')[0]} is undocumented"
    # none of them is read by cdd-forecast or prefect from a .env in the project directory
    assert not [n for n in documented if n.startswith(("CDDF_", "PREFECT_"))]


def test_dockerfile_has_pinned_non_root_cpu_and_gpu_targets():
    stages = dockerfile_stages()
    targets = {s["build"]["target"] for s in services().values() if "build" in s}
    assert targets == {"cpu", "gpu"} and targets <= set(stages)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", dockerfile_args()["PYTHON_IMAGE"])
    assert stages["cpu"][0].split()[1] == stages["gpu"][0].split()[1] == "runtime"
    assert any(re.fullmatch(r"USER (?!root|0\b)\w+", line) for line in stages["runtime"])
    assert any("tensorflow[and-cuda]==" in line for line in stages["build-gpu"])
    assert "build-cpu" in stages["build-gpu"][0]  # the gpu image builds the same project
    tf_versions = set(
        re.findall(r"ARG TENSORFLOW_VERSION=(\S+)", (ROOT / "Dockerfile").read_text())
    )
    assert len(tf_versions) == 1


def test_dockerfile_copies_only_what_exists_and_is_not_ignored():
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".env", ".venv", ".git"} <= set(ignored)
    for lines in dockerfile_stages().values():
        for line in lines:
            words = line.split()
            if words[0] != "COPY" or any(w.startswith("--from") for w in words):
                continue
            for source in [w for w in words[1:-1] if not w.startswith("--")]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
                assert source not in ignored, f"Dockerfile copies {source}, which is ignored"


def test_postgres_init_script_creates_the_prefect_database(tmp_path):
    """The init script, run as the postgres image runs it, on the real server (names changed)."""
    from tests.conftest import POSTGRES_URL, require_postgres

    require_postgres()
    if not shutil.which("psql"):
        pytest.skip("psql is not installed (apt-get install -y postgresql-client)")
    import uuid

    import sqlalchemy as sa

    name = f"prefect_{uuid.uuid4().hex[:10]}"
    (script,) = POSTGRES_INIT.glob("*.sh")
    copy = tmp_path / script.name
    copy.write_text(re.sub(r"\bprefect\b(?!_)", name, script.read_text()))
    url = make_url(POSTGRES_URL)
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": url.host or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "PG_PREFECT_PASSWORD": 'it\'s a "quoted" pass;word',
    }
    if url.password:
        env["PGPASSWORD"] = url.password
    server = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        done = subprocess.run(["sh", str(copy)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert env["PG_PREFECT_PASSWORD"] not in done.stdout + done.stderr
        with server.connect() as connection:
            owner = connection.execute(
                sa.text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :name"),
                {"name": name},
            ).scalar()
            verifier = connection.execute(
                sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :name"), {"name": name}
            ).scalar()
        assert owner == name and verifier.startswith("SCRAM-SHA-256$")
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
        server.dispose()


def test_every_port_in_a_url_or_command_comes_from_env():
    """No port is written in docker-compose.yml but as a default of its .env variable."""
    for text in strings(compose()) + strings(override(HOST_NETWORK_FILE)):
        bare = re.sub(r"\$\{\w+:?[-?][^}]*\}", "${}", text)
        assert not re.search(r"(:|--port\W+)\d{2,5}(?![\d.])", bare), text
    for name, ports in [
        (n, s.get("ports", [])) for n, s in override(PUBLISH_FILE)["services"].items()
    ]:
        assert all(re.fullmatch(r"\$\{\w+:-127\.0\.0\.1:\d+\}:\$\{\w+:-\d+\}", p) for p in ports), (
            name,
            ports,
        )


def test_on_the_host_network_every_service_listens_on_127_0_0_1_only():
    host = override(HOST_NETWORK_FILE)["services"]
    assert set(host) == set(services())
    for name, service in host.items():
        assert service["network_mode"] == "host", name
        assert set(service["extra_hosts"]) == {"postgres:127.0.0.1", "prefect-server:127.0.0.1"}
        assert "ports" not in service, name
        if "build" in services()[name]:
            assert service["build"] == {"network": "host"}, name
    assert host["postgres"]["command"] == ["postgres", "-c", "listen_addresses=127.0.0.1"]
    server = host["prefect-server"]["command"]
    assert server[server.index("--host") + 1] == "127.0.0.1"
    assert server[server.index("--port") + 1] == "${SERVER_PORT:-4200}"
    for name in ("worker-cpu", "worker-gpu"):
        assert host[name]["environment"] == {"PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1"}
        assert "PREFECT_WORKER_WEBSERVER_PORT" in environment(services()[name])
    # published ports only where Docker makes the network
    assert {n for n, s in services().items() if "ports" in s} == set()
    assert set(override(PUBLISH_FILE)["services"]) == {"postgres", "prefect-server"}
