#!/usr/bin/env python3
"""Writes a linker symbol-ordering file from two callgrind dumps of `axle server`.

Usage: order.py STARTUP_DUMP SERVING_DUMP > text-order.txt

The functions the server runs while serving come first, those only its start runs next;
functions never run keep the linker's default place after both. Names stay mangled: they are
the symbol names the linker matches.
"""
import re
import sys

FN = re.compile(r"^fn=\((\d+)\)(?: (.*))?$")


def functions(dump_path):
    """Names of the functions with a cost in one callgrind dump, in order of first cost."""
    names_by_id, seen = {}, {}
    # Callgrind compresses names: `fn=(7) name` defines id 7 at its first use, and any
    # `cfn=`/`fi=` line can define ids too, so every `(id) name` pair is recorded.
    define = re.compile(r"^c?fn=\((\d+)\) (.*)$")
    with open(dump_path, encoding="utf-8", errors="replace") as dump:
        for line in dump:
            defined = define.match(line)
            if defined:
                names_by_id[defined.group(1)] = defined.group(2)
            cost_owner = FN.match(line)
            if cost_owner:
                name = names_by_id.get(cost_owner.group(1))
                if name and name not in seen:
                    seen[name] = None
    return list(seen)


def main():
    startup_dump, serving_dump = sys.argv[1:3]
    serving = functions(serving_dump)
    serving_set = set(serving)
    startup_only = [f for f in functions(startup_dump) if f not in serving_set]
    for name in serving + startup_only:
        # Only Rust and C symbols the linker knows; callgrind's "0x…" placeholders are not.
        if not name.startswith("0x"):
            print(name)
    print(f"{len(serving)} serving functions, {len(startup_only)} startup-only", file=sys.stderr)


if __name__ == "__main__":
    main()
