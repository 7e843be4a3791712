"""The system's one description, system.toml at the repository's root, for the scripts.

As a module: `processes()`, `process(name)`, `url(name)`. As a command (scripts/lib/common.sh
wraps it as `system`):

    system.py names                 # every process, in start order
    system.py get NAME FIELD        # one field (a list's items space-separated; none: empty)
    system.py rows                  # name, prefix, port, database, outboxes, offers; tab-separated
"""

import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def processes():
    return tomllib.loads((ROOT / "system.toml").read_text())["process"]


def process(name):
    for entry in processes():
        if entry["name"] == name:
            return entry
    raise KeyError(f"system.toml has no process named {name!r}")


def url(name):
    """The process's address on this machine at its default port."""
    return f"http://127.0.0.1:{process(name)['port']}"


def _text(value):
    return " ".join(value) if isinstance(value, list) else str(value)


def main(args):
    if args == ["names"]:
        print("\n".join(entry["name"] for entry in processes()))
    elif len(args) == 3 and args[0] == "get":
        print(_text(process(args[1]).get(args[2], "")))
    elif args == ["rows"]:
        for entry in processes():
            fields = ("name", "prefix", "port", "database", "outboxes", "offers")
            print("\t".join(_text(entry.get(field, "")) or "-" for field in fields))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
