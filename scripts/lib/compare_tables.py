"""Compares diesel `table!` definitions: the hand-kept ones in schema/src/tables.rs (the
`messaging` module plus one database's module) against `diesel print-schema` output.
Prints every difference and exits 1 if there is any."""
import re
import sys

TABLE = re.compile(r"table!\s*\{\s*(\w+)\s*\(([^)]*)\)\s*\{(.*?)\}\s*\}", re.S)
COLUMN = re.compile(r"^\s*(\w+)\s*->\s*([^,]+),", re.M)


def tables(text):
    return {
        name: {"key": key.replace(" ", ""), "columns": COLUMN.findall(body)}
        for name, key, body in TABLE.findall(text)
    }


def module(text, name):
    start = text.index(f"pub mod {name} {{")
    depth, i = 0, text.index("{", start)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i : j + 1]
    raise ValueError(name)


def main(tables_rs, module_name, printed):
    source = open(tables_rs).read()
    expected = tables(module(source, "messaging")) | tables(module(source, module_name))
    actual = tables(open(printed).read())
    problems = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            problems.append(f"{name}: defined in tables.rs but not created by the migrations")
        elif name not in expected:
            problems.append(f"{name}: created by the migrations but missing from tables.rs")
        elif expected[name] != actual[name]:
            problems.append(f"{name}: tables.rs has {expected[name]}, the database has {actual[name]}")
    for problem in problems:
        print(f"  {module_name}.{problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
