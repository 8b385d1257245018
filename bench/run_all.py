"""Run every benchmark under bench/ (bench_*.py) and collect their Markdown into bench/results/SUMMARY.md."""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv: list[str]) -> int:
    """Run the benchmarks named in argv (default: all), passing `--quick` through; the exit status."""
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("--")]
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if any(n in s.stem for n in names)]
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(script), *(["--quick"] if quick else [])], cwd=HERE.parent)
        print(f"== {script.name}: exit {result.returncode} after {time.perf_counter() - started:.0f}s", flush=True)
        if result.returncode != 0:
            failed.append(script.name)
    cpu = platform.processor() or platform.machine()
    lines = [
        f"# Benchmark results ({datetime.date.today().isoformat()}, {cpu}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores, Python {platform.python_version()})",
        "",
    ]
    for md in sorted(RESULTS.glob("*.md")):
        if md.name != "SUMMARY.md":
            lines += [md.read_text().strip(), ""]
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines))
    print(f"summary: {RESULTS / 'SUMMARY.md'}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
