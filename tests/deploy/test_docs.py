"""docs/deploy.md is true to the code: its commands exist with the options it uses, and the
services, deployments, settings, variables and files it names are real."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid

import prefect.settings
import pytest
import yaml
from prefect.events.schemas.automations import AutomationCore

from settings import Settings
from tests.deploy.compose import (
    DEPLOY_DOC,
    ENV_EXAMPLE,
    ROOT,
    compose,
    doc_blocks,
    doc_shell_commands,
    env_file,
    help_text,
    interpolate,
    override,
    services,
    stack_test_blocks,
    strings,
    teardown_command,
)

DOC = DEPLOY_DOC.read_text()
README = (ROOT / "README.md").read_text()
# the compose command every command of the docs uses: Debian 12's (docs/deploy.md says how to
# use the plugin's `docker compose` instead)
COMPOSE = ["docker-compose"]
COMPOSE_OPTIONS_WITH_VALUE = {"--profile", "--scale", "-f", "--file", "--env-file", "-p", "--rmi"}


def resolve(tokens: list[str]) -> tuple[list[str], list[str], list[str]]:
    """``prefect --no-prompt deployment run 'x/y' --watch`` → global options, the command path
    (``prefect deployment run``: groups are followed while their help lists commands) and the
    options used."""
    program, rest = tokens[0], tokens[1:]
    global_options = []
    while rest and rest[0].startswith("-"):
        global_options.append(rest.pop(0))
    path = [program]
    while rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
        if len(path) > 1 and "Commands" not in help_text(tuple(path)).stdout:
            break
        path.append(rest.pop(0))
    return global_options, path, [w.split("=", 1)[0] for w in rest if w.startswith("--")]


def inner_commands() -> tuple[list[list[str]], set[str]]:
    """The project and Prefect commands the doc runs (also inside `docker compose exec|run` and
    `docker run`), and the compose services it names."""
    found, named = [], set()
    for tokens in doc_shell_commands():
        while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):
            tokens = tokens[1:]
        if tokens[: len(COMPOSE)] == COMPOSE:
            words, index = tokens[len(COMPOSE) :], 0
            while index < len(words) and words[index].startswith("-"):
                index += 2 if words[index] in COMPOSE_OPTIONS_WITH_VALUE else 1
            action, args = words[index], words[index + 1 :]
            positional = []
            while args:
                word = args.pop(0)
                if word.startswith("-"):
                    if word in COMPOSE_OPTIONS_WITH_VALUE:
                        args.pop(0)
                    continue
                positional.append(word)
                if action in {"exec", "run"}:
                    break
            named |= set(positional)
            tokens = args if action in {"exec", "run"} else []
        elif tokens[:2] == ["docker", "run"]:
            tokens = tokens[[t.startswith("cdd-forecast:") for t in tokens].index(True) + 1 :]
        if tokens and tokens[0] in {"prefect", "cdd-forecast"}:
            found.append(tokens)
    return found, named


@pytest.mark.slow  # one `--help` subprocess per command path
def test_the_commands_in_the_doc_exist_with_their_options():
    commands, _ = inner_commands()
    assert len(commands) >= 15
    for tokens in commands:
        global_options, path, options = resolve(tokens)
        done = help_text(tuple(path))
        shown = " ".join(tokens)
        assert len(path) > 1 and done.returncode == 0, f"{shown}: {done.stderr}"
        for option in options:
            assert option in done.stdout, f"{shown}: `{' '.join(path)}` has no {option}"
        for option in global_options:
            assert option in help_text((path[0],)).stdout, f"{shown}: no {option}"


def test_the_services_the_doc_names_are_the_compose_services():
    _, named = inner_commands()
    assert named <= set(services()), (
        f"not services of docker-compose.yml: {named - set(services())}"
    )
    table = set(re.findall(r"^\| `([\w-]+)`", DOC, re.M))
    assert table == set(services())


def _flow_names() -> dict[str, str]:
    """Deployment → its flow's name, from prefect.yaml and the entrypoints' @flow(name=...)."""
    names = {}
    for deployment in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        source = (ROOT / path).read_text()
        match = re.search(rf'@flow\(\s*name="([^"]+)"[^)]*\)\s*def {function}\(', source)
        assert match, f"{path}: no @flow(name=...) on {function}"
        names[deployment["name"]] = match[1]
    return names


def test_the_deployments_the_doc_names_exist():
    real = {f"{flow}/{deployment}" for deployment, flow in _flow_names().items()}
    mentioned = set(re.findall(r"(?:[`']|=)([a-z]+/[a-z]+)(?=[`'\s])", DOC))
    assert mentioned and mentioned <= real, f"unknown deployments: {mentioned - real}"
    assert {"daily/daily", "backfill/backfill", "train/train"} <= mentioned


def test_the_settings_variables_and_files_the_doc_names_are_real():
    cddf = set(re.findall(r"\b(CDDF_[A-Z_]+)\b", DOC))
    fields = set(Settings.model_fields)
    assert {name for name in cddf if name.removeprefix("CDDF_").lower() not in fields} == set()
    unknown_prefect = {
        name
        for name in re.findall(r"\b(PREFECT_[A-Z_]+)\b", DOC)
        if not hasattr(prefect.settings, name)
    }
    assert unknown_prefect == set()
    compose_variables = set(
        re.findall(r"\b((?:PG|UI|POSTGRES)_[A-Z_]+|FORECAST_SERIES|TRAIN_DEPLOYMENT)\b", DOC)
    )
    assert compose_variables <= set(env_file(ENV_EXAMPLE)), compose_variables - set(
        env_file(ENV_EXAMPLE)
    )
    files = set(re.findall(r"`((?:[\w.-]+/)+[\w.-]+\.(?:py|yml|yaml|sh|md))`", DOC))
    files |= {"Dockerfile", "docker-compose.yml", ".env.example", "prefect.yaml"} & set(
        re.findall(r"`([\w.-]+)`", DOC)
    )
    missing = {name for name in files if not (ROOT / name).exists()}
    assert files and not missing, f"the doc names missing files: {missing}"


def test_the_doc_automation_is_valid_for_prefect():
    (block,) = doc_blocks("yaml")
    data = yaml.safe_load(block.replace("<the id of ops-alerts>", str(uuid.uuid4())))
    automation = AutomationCore.model_validate(data)
    assert automation.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert automation.actions[0].type == "send-notification"


def test_every_compose_command_of_the_docs_is_the_one_debian_12_has():
    spans = re.findall(r"`(docker[ -]compose[^`]*)`", (DOC + README).replace("\n", " "))
    commands = [" ".join(tokens) for tokens in doc_shell_commands() if tokens[0] == "docker"]
    plugin = [text for text in spans + commands if text.startswith("docker compose ")]
    assert plugin == [], f"written for the Compose plugin, not `docker-compose`: {plugin}"
    assert sum(t[:1] == COMPOSE for t in doc_shell_commands()) >= 20
    assert "type\n`docker compose` wherever this page says `docker-compose`" in DOC


def test_the_env_recipe_sets_everything_the_compose_file_requires(tmp_path):
    (recipe,) = [block for block in doc_blocks("bash") if "cp .env.example .env" in block]
    setup = []
    for line in recipe.splitlines():
        if line.startswith("docker-compose"):
            break
        setup.append(line)
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env.example")
    done = subprocess.run(
        ["bash", "-euc", "\n".join(setup)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    values = env_file(tmp_path / ".env")
    for text in strings(compose()):
        interpolate(text, values)  # a required variable left unset raises, naming it
    assert re.fullmatch(r"admin:[0-9a-f]{48}", values["SERVER_AUTH"])
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0


def test_the_revision_the_doc_shows_is_alembics_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()
    shown = re.findall(r"is at revision (\w+)", DOC)
    assert shown == [head], f"docs/deploy.md shows revision {shown}; alembic's head is {head}"


def test_the_docs_name_every_deployment_and_count_none():
    doc = " ".join(DOC.split())
    for deployment, flow_name in _flow_names().items():
        named = f"{flow_name}/{deployment}"
        assert f"`{named}`" in doc or f"`{deployment}` deployment" in doc, (
            f"docs/deploy.md omits deployment {named}"
        )
        assert f"`{deployment}`" in README, f"README.md omits deployment {deployment}"
    counted = re.findall(r"\b(?:two|three|four|five|six|\d+) deployments\b", DOC + README)
    assert counted == [], f"a count of deployments goes stale: {counted}"


def test_the_host_network_recipe_puts_every_url_on_the_ports_of_env(tmp_path):
    """The doc's marked .env blocks, run as written (the image build left out): COMPOSE_FILE
    names the host-network file, and every URL and listener uses the ports of .env."""
    blocks = stack_test_blocks()
    assert len(blocks) == 4, "the stack test runs: .env, images, host network, start"
    env_recipe, images, host_network, start = blocks
    assert "deploy/images/build.sh" in images
    assert [line.split("#")[0].strip() for line in start.splitlines()] == [
        "docker-compose config -q",
        "docker-compose up -d --build",
        "docker-compose ps",
    ]
    assert teardown_command() == "docker-compose --profile gpu down -v"
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env.example")
    images_env = "\n".join(line for line in images.splitlines() if line.startswith("sed "))
    script = "\n".join([env_recipe, images_env, host_network])
    done = subprocess.run(["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    values = env_file(tmp_path / ".env")
    files = values["COMPOSE_FILE"].split(":")
    assert files == ["docker-compose.yml", "docker-compose.host.yml"]
    assert (values["PG_PORT"], values["PYTHON_IMAGE"]) == ("5433", "cddf-base:bookworm")
    texts = [interpolate(t, values) for t in strings(compose())]
    texts += [interpolate(t, values) for t in strings(override(ROOT / files[1]))]
    urls = [url for text in texts for url in re.findall(r"[\w+]+://[^\s'\"]+", text)]
    database_urls = [url for url in urls if url.startswith("postgresql")]
    assert len(database_urls) >= 3 and all("@postgres:5433/" in url for url in database_urls)
    api_urls = [url for url in urls if "prefect-server" in url]
    assert api_urls and all(url.startswith("http://prefect-server:4200/") for url in api_urls)
    assert interpolate(services()["postgres"]["image"], values) == "cddf-postgres:15-bookworm"
