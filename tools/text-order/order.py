#!/usr/bin/env python3
"""Writes a linker symbol-ordering file from callgrind dumps of `axle server` and `axle agent`.

Usage: order.py --symbols NM --idle DUMP... --serving DUMP... --startup DUMP... > text-order.txt

NM is `nm --defined-only` of the profiled binary. Hottest first: the functions the processes
run alone (the server's controllers' periodic passes, an agent's heartbeats), then those they
run only while serving, then every CPU-specific variant of a routine (see CPU_VARIANT), then
those only their start runs; functions never run keep the linker's default place after all.
Names stay mangled: they are the symbol names the linker matches.
"""
import argparse
import re
import sys

# Crypto, hashing and decompression pick an implementation by the CPU's features at run time
# (ring's AES-GCM with VAES or AES-NI, SHA with SHA-NI or AVX, zstd with BMI2 …). Callgrind's
# virtual CPU lacks some of them, so the variant a car's CPU runs may not be in the profile:
# all variants stay together after the serving code instead of scattered among cold code.
CPU_VARIANT = re.compile(r"^ring_core_|avx|sse|ssse3|bmi2|shaext|vaes|clmul|_adx|nohw", re.IGNORECASE)

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


def code_symbols(nm_path):
    """Names of the functions an `nm` listing defines."""
    with open(nm_path, encoding="utf-8", errors="replace") as listing:
        return [f[2] for f in (line.split() for line in listing) if len(f) == 3 and f[1] in "tTwW"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", required=True)
    for phase in ("idle", "serving", "startup"):
        parser.add_argument(f"--{phase}", nargs="+", required=True)
    args = parser.parse_args()
    # Only the binary's own functions: callgrind also names libc's and its "0x…" placeholders.
    own = code_symbols(args.symbols)
    own_set = set(own)
    listed = set()

    def tier(names):
        fresh = [f for f in names if f in own_set and f not in listed]
        listed.update(fresh)
        return fresh

    idle = [f for dump in args.idle for f in tier(functions(dump))]
    serving = [f for dump in args.serving for f in tier(functions(dump))]
    variants = tier(f for f in own if CPU_VARIANT.search(f))
    startup_only = [f for dump in args.startup for f in tier(functions(dump))]
    for name in idle + serving + variants + startup_only:
        print(name)
    print(
        f"{len(idle)} idle, {len(serving)} more serving, {len(variants)} CPU variants, "
        f"{len(startup_only)} startup-only functions",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
