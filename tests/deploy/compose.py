"""Reading docker-compose.yml, .env.example, the Dockerfile, the services' shell commands and
docs/deploy.md the way Compose, a shell or a reader would, for the deploy tests (no Docker
engine needed)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# read by docker-compose beside COMPOSE_FILE when no -f names files: Docker's own network
PUBLISH_FILE = ROOT / "docker-compose.override.yml"
HOST_NETWORK_FILE = ROOT / "docker-compose.host.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
POSTGRES_INIT = ROOT / "deploy" / "postgres-init"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
VENV_BIN = Path(sys.executable).parent

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, $NAME
_INTERPOLATION = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
_SEPARATOR = re.compile(r"\s*(?:&&|\|\||;|\||\n)\s*")
_REDIRECTION = re.compile(r"\s\d*>>?&?\s*\S+")
_SHELL_KEYWORDS = {"do", "then", "else", "!", "exec"}


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@cache
def override(path: Path) -> dict[str, Any]:
    """An override file (PUBLISH_FILE, HOST_NETWORK_FILE), parsed."""
    return yaml.safe_load(path.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def strings(node: Any) -> list[str]:
    """Every string value in a parsed YAML tree, where Compose interpolates (not comments)."""
    if isinstance(node, dict):
        return [text for value in node.values() for text in strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in strings(value)]
    return [node] if isinstance(node, str) else []


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (map or list form) as a dict of raw, uninterpolated values."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def interpolated_names(text: str) -> set[str]:
    """Every variable Compose would substitute in ``text`` (``$$`` is a literal dollar)."""
    text = text.replace("$$", "")
    return {m["braced"] or m["plain"] for m in _INTERPOLATION.finditer(text)}


def interpolate(text: str, values: dict[str, str]) -> str:
    """``text`` as Compose substitutes it from ``values``; a missing required one raises."""

    def substitute(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        value, op = values.get(name), match["op"] or ""
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("?") and unset:
            raise KeyError(f"{name}: {match['arg']}")
        if op.endswith("-") and unset:
            return match["arg"]
        return value or ""

    parts = text.split("$$")
    return "$".join(_INTERPOLATION.sub(substitute, part) for part in parts)


def env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file, comments and blank lines skipped."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"{path.name}:{number}: expected KEY=VALUE, got {line!r}")
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def command_line(service: dict[str, Any]) -> list[str]:
    """The service's command as the container runs it (``$$`` already turned into ``$``)."""
    command = service.get("command")
    if command is None:
        return []
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    return [word.replace("$$", "$") for word in words]


def simple_commands(service: dict[str, Any]) -> list[list[str]]:
    """The simple commands a service runs: its command, or each one of its ``sh -c`` script
    (separators, redirections, ``for … do … done`` headers and keywords removed)."""
    words = command_line(service)
    if len(words) == 2 and words[0] == "sh" and (ROOT / words[1]).is_file():
        return script_commands(ROOT / words[1])
    if len(words) >= 3 and words[0] == "sh" and words[1].startswith("-") and "c" in words[1]:
        commands = []
        script = _REDIRECTION.sub(" ", words[2])
        for piece in _SEPARATOR.split(script):
            tokens = shlex.split(piece)
            while tokens and tokens[0] in _SHELL_KEYWORDS:
                tokens = tokens[1:]
            if tokens and tokens[0] not in {"for", "done", "fi", "if"}:
                commands.append(tokens)
        return commands
    return [words] if words else []


def script_commands(path: Path) -> list[list[str]]:
    """The ``prefect`` and ``cdd-forecast`` commands a shell script file runs (its other
    programs — sed, python3, case — are the script's own plumbing)."""
    commands = []
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("#"):
            continue
        for piece in _SEPARATOR.split(_REDIRECTION.sub(" ", line)):
            try:
                tokens = shlex.split(piece)
            except ValueError:
                continue
            while tokens and tokens[0] in _SHELL_KEYWORDS:
                tokens = tokens[1:]
            if tokens and tokens[0] in {"prefect", "cdd-forecast"}:
                commands.append(tokens)
    return commands


def command_path(tokens: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Split ``prefect --no-prompt deploy --all`` into global options (``--no-prompt``), the
    command path (``prefect deploy``) and its options (``--all``)."""
    program, rest = tokens[0], tokens[1:]
    global_options = []
    while rest and rest[0].startswith("-"):
        global_options.append(rest.pop(0).split("=", 1)[0])
    path = [program]
    while rest and not rest[0].startswith("-") and "$" not in rest[0]:
        path.append(rest.pop(0))
    options = [word.split("=", 1)[0] for word in rest if word.startswith("--")]
    return global_options, path, options


def dockerfile_stages() -> dict[str, list[str]]:
    """Each build stage's instructions (continuation lines joined), keyed by stage name."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if match := re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE):
            current = match[2] or match[1]
            stages[current] = []
        stages[current].append(line)
    return stages


def dockerfile_args() -> dict[str, str]:
    """Default values of the ``ARG NAME=value`` lines."""
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", DOCKERFILE.read_text(), re.MULTILINE))


def doc_blocks(language: str) -> list[str]:
    """The fenced code blocks of docs/deploy.md in ``language`` (bash, sql, yaml)."""
    return re.findall(rf"^```{language}\n(.*?)^```", DEPLOY_DOC.read_text(), re.M | re.S)


STACK_TEST_MARK = "<!-- the stack test runs this block -->"
TEARDOWN_MARK = "<!-- the stack test runs the `down -v` line of this block -->"


def stack_test_blocks() -> list[str]:
    """The bash blocks of docs/deploy.md marked for the stack test, in the doc's order: the
    operator's set-up, which the test runs as written."""
    mark = re.escape(STACK_TEST_MARK)
    return re.findall(rf"^{mark}\n```bash\n(.*?)^```", DEPLOY_DOC.read_text(), re.M | re.S)


def teardown_command() -> str:
    """The ``down -v`` line of the doc's teardown block (comment dropped)."""
    mark = re.escape(TEARDOWN_MARK)
    (block,) = re.findall(rf"^{mark}\n```bash\n(.*?)^```", DEPLOY_DOC.read_text(), re.M | re.S)
    (line,) = [
        line.split("#", 1)[0].strip()
        for line in block.splitlines()
        if re.search(r"\bdown -v\s*(#|$)", line)
    ]
    return line


def doc_shell_commands() -> list[list[str]]:
    """Every simple command of the doc's bash blocks and of its inline `prefect …` and
    `cdd-forecast …` spans, as words (comments, continuations and ``&&``/``;`` split off)."""
    text = DEPLOY_DOC.read_text()
    lines = [
        line
        for block in doc_blocks("bash")
        for line in re.sub(
            r"(^|\s)#.*$", "", re.sub(r"\\\n\s*", " ", block), flags=re.M
        ).splitlines()
    ]
    lines += re.findall(r"`((?:prefect|cdd-forecast) [^`]+)`", text.replace("\n", " "))
    commands = []
    for line in lines:
        for piece in _SEPARATOR.split(line):
            try:
                tokens = shlex.split(piece, comments=True)
            except ValueError:  # a quote opened in one piece and closed in the next
                continue
            if tokens:
                commands.append(tokens)
    return commands


@cache
def help_text(path: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """``<path> --help`` run with the project's virtual environment (cached per path)."""
    executable = VENV_BIN / path[0]
    return subprocess.run(
        [str(executable), *path[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )
