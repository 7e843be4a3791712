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


def differences(expected, actual):
    if expected["key"] != actual["key"]:
        yield f"primary key: tables.rs ({expected['key']}), database ({actual['key']})"
    want, have = dict(expected["columns"]), dict(actual["columns"])
    for column in sorted(want.keys() | have.keys()):
        if column not in have:
            yield f"{column}: in tables.rs, not in the database"
        elif column not in want:
            yield f"{column}: in the database, not in tables.rs"
        elif want[column] != have[column]:
            yield f"{column}: tables.rs says {want[column]}, the database has {have[column]}"
    if [c for c, _ in expected["columns"]] != [c for c, _ in actual["columns"]] and want.keys() == have.keys():
        yield "columns are in a different order (diesel selects by position)"


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
        else:
            problems.extend(f"{name}.{p}" for p in differences(expected[name], actual[name]))
    for problem in problems:
        print(f"  {module_name}.{problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
