"""Run a module (or `-c` code) as __main__ and print this process's own peak RSS when it ends.

Why not wait4's ru_maxrss: on Linux a child's maximum RSS starts at the size of the address space
it was forked (or vforked) from, counted when it execs, so every child of a bench process that
has TensorFlow loaded reports at least the bench's own size. VmHWM in /proc/self/status is the
peak of the child's own address space only.

    python -m bench.peak chalicelib.local.cli score ...   |   python -m bench.peak -c "code" args
"""
from __future__ import annotations

import atexit
import runpy
import sys

MARK = "PEAK_RSS_KIB="


def _report() -> None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                print(f"{MARK}{line.split()[1]}", file=sys.stderr, flush=True)


def main() -> None:
    atexit.register(_report)
    if sys.argv[1] == "-c":
        code, sys.argv = sys.argv[2], ["-c", *sys.argv[3:]]
        exec(compile(code, "<bench.peak>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = sys.argv[1:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
