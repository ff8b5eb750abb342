"""Runs a module as __main__, then prints this process's own peak RSS (VmHWM) as `PEAK_RSS_KB <n>`.

    python -m benchmarks._peak_rss pipelines.train --input=... --preprocess_only

Why not the parent's rusage: Linux carries the forking process's resident size
into the child's ru_maxrss at exec, so a child of a 4 GB benchmark process reports
at least 4 GB. VmHWM belongs to the memory map exec created: this program's own.
"""
import runpy
import sys


def _vm_hwm_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main() -> None:
    module, sys.argv = sys.argv[1], [sys.argv[1]] + sys.argv[2:]
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    finally:
        print(f"PEAK_RSS_KB {_vm_hwm_kb()}", flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
