"""The shell commands a Markdown page asks its reader to type: its ```bash blocks, one command each.

``readme_commands(text)`` joins lines continued with a trailing backslash, drops comments (a ``#``
outside quotes, at the start of a line or after a space) and blank lines, and splits chains
(``a && b``, ``a; b``) into their commands. tests/test_readme.py uses it to check that every
command of README.md starts with a known entry point and that its Hydra overrides compose.

Run as a script to see what it extracts: ``python tests/readme_commands.py [README.md]``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_BASH_BLOCK = re.compile(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _split(line: str) -> tuple[list[str], bool]:
    """``line`` cut at unquoted ``&&`` and ``;``, up to an unquoted comment; and whether a comment
    ended it."""
    parts, current, quote, i = [], "", None, 0
    while i < len(line):
        char = line[i]
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"' and i + 1 < len(line):
                current += char
                i += 1
                char = line[i]
        elif char in "'\"":
            quote = char
        elif char == "\\" and i + 1 < len(line):
            current += char + line[i + 1]
            i += 2
            continue
        elif char == "#" and (not current or current[-1].isspace()):
            return [*parts, current], True
        elif line.startswith("&&", i) or char == ";":
            parts.append(current)
            current = ""
            i += 2 if char == "&" else 1
            continue
        current += char
        i += 1
    return [*parts, current], False


def readme_commands(text: str) -> list[str]:
    """Every command of the ```bash blocks of ``text``, in order, as one line each."""
    commands: list[str] = []
    for block in _BASH_BLOCK.findall(text):
        pending = ""
        for raw in block.splitlines():
            line = raw.rstrip()
            continued = line.endswith("\\") and not line.endswith("\\\\")
            if continued:
                line = line[:-1]
            parts, commented = _split(line)
            if pending:
                parts[0] = pending + parts[0].lstrip()
            pending = parts.pop().strip() + " " if continued and not commented else ""
            commands.extend(part.strip() for part in parts if part.strip())
        if pending.strip():
            commands.append(pending.strip())
    return commands


if __name__ == "__main__":
    page = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1] / "README.md")
    print("\n".join(readme_commands(page.read_text())))
