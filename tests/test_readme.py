"""README.md only shows commands that work as written, and links only to pages that exist.

Every command of its ```bash blocks starts with a setup command or one of the project's entry
points; every ``python src/<entry>.py ...`` composes its Hydra config with the command's own
overrides (placeholders such as ``<folder of X-rays>`` replaced by a folder), so a misspelt key or
config group fails here, without training or privatizing anything. Each value of a ``-m`` sweep
is composed once, with the other sweeps at their first value.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import ROOT, compose_run
from readme_commands import readme_commands

README = ROOT / "README.md"
COMMANDS = readme_commands(README.read_text())
SETUP = ("pip install ", "python3 -m venv ", ". .venv/bin/activate", "python -m pytest", "ruff ")
PLACEHOLDER = re.compile(r"<[^<>\n]+>")
ENTRY = re.compile(r"^python src/(\w+)\.py(?:\s|$)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _config_name(script: Path) -> str | None:
    """The ``config_name`` of a Hydra entry point; None for one without Hydra."""
    found = re.search(r"@hydra\.main\([^)]*config_name=\"(\w+)\"", script.read_text())
    return found.group(1) if found else None


def _parse(command: str, folder: Path) -> tuple[str, bool, str | None, list[str]]:
    """``python src/<entry>.py [-m] [--config-name X] overrides`` -> (entry, multirun, config
    name given on the command line, overrides), placeholders replaced by ``folder``."""
    words = shlex.split(PLACEHOLDER.sub(str(folder), command))
    entry, multirun, config_name, overrides = words[1], False, None, []
    rest = iter(words[2:])
    for word in rest:
        if word in ("-m", "--multirun"):
            multirun = True
        elif word in ("--config-name", "-cn"):
            config_name = next(rest)
        elif word.startswith("--config-name="):
            config_name = word.split("=", 1)[1]
        elif word.startswith("-"):
            raise AssertionError(f"{command!r}: the README test does not know the flag {word}")
        else:
            overrides.append(word)
    return entry, multirun, config_name, overrides


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to compose: one, or for a sweep each swept value once."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = [i for i, override in enumerate(parsed) if override.is_sweep_override()]
    assert multirun or not sweeps, f"{overrides}: a sweep (a,b,...) needs -m"
    if not sweeps:
        return [overrides]
    values = {i: list(parsed[i].sweep_string_iterator()) for i in sweeps}

    def job(choice: dict[int, str]) -> list[str]:
        return [
            f"{parsed[i].get_key_element()}={choice.get(i, values[i][0])}" if i in values else text
            for i, text in enumerate(overrides)
        ]

    return [job({i: value}) for i in sweeps for value in values[i]]


def test_the_readme_has_commands():
    assert any(ENTRY.match(command) for command in COMMANDS), COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_starts_with_a_known_entry_point(command: str):
    if command == "bash .ci/run" or command.startswith(SETUP):
        return
    match = ENTRY.match(command)
    assert match, f"{command!r} is neither a setup command nor python src/<entry>.py"
    assert (ROOT / "src" / f"{match.group(1)}.py").is_file(), f"no src/{match.group(1)}.py"


@pytest.mark.parametrize("command", [c for c in COMMANDS if ENTRY.match(c)])
def test_every_entry_point_command_composes(command: str, tmp_path: Path):
    entry, multirun, config_name, overrides = _parse(command, tmp_path / "placeholder")
    script = ROOT / entry
    default_name = _config_name(script)
    if default_name is None:  # report.py: argparse, its argument is a folder
        assert not multirun and config_name is None, command
        return
    for i, job in enumerate(_jobs(overrides, multirun)):
        try:
            cfg = compose_run(config_name or default_name, job, tmp_path / f"job{i}")
        finally:
            GlobalHydra.instance().clear()
        assert cfg.task_name, f"{command!r} composed without a task_name"


def _relative_links(text: str) -> list[str]:
    links = [target for target in LINK.findall(text) if not target.startswith("#")]
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]


def test_every_relative_link_of_the_readme_exists():
    links = _relative_links(README.read_text())
    assert links, "the README links no page"
    missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_readme_links_every_documentation_page():
    linked = {
        (ROOT / link.split("#", 1)[0]).resolve() for link in _relative_links(README.read_text())
    }
    pages = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "CHANGELOG.md"]
    unlinked = [str(page.relative_to(ROOT)) for page in pages if page.resolve() not in linked]
    assert not unlinked, f"README.md does not link {unlinked}: add them to its Documentation list"


def test_the_extractor_joins_continuations_and_drops_comments():
    text = (
        "text\n```bash\n# a comment\npython src/train.py a=1 \\\n    b='x # y'   # why\n"
        "python3 -m venv .venv && . .venv/bin/activate\n```\n```python\nnot a command\n```\n"
    )
    assert readme_commands(text) == [
        "python src/train.py a=1 b='x # y'",
        "python3 -m venv .venv",
        ". .venv/bin/activate",
    ]
