"""Prints the test ids of one part of a pytest selection, for device runs that cannot hold the whole GPU suite in
one 10-minute command: part 1 on a fresh machine after the build, part 2 on the same (still warm) machine next.

    python3 tools/split_ids.py 1 0.45 tests/test_cuda.py tests/test_sampling.py > ids1.txt
    python3 -m pytest -q $(cat ids1.txt)

part: 1 (the first `frac` of the ids, in collection order) or 2 (the rest); --skip N drops the first N ids
(e.g. those a timed-out run already passed, counted from its progress dots).
"""
import argparse
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("part", type=int, choices=(1, 2))
    ap.add_argument("frac", type=float)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--skip", type=int, default=0)
    a = ap.parse_args()
    if not 0.0 < a.frac < 1.0:
        ap.error(f"frac must be between 0 and 1 (got {a.frac})")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider", *a.paths],
                       capture_output=True, text=True)
    ids = [line for line in r.stdout.splitlines() if "::" in line][a.skip:]
    if not ids:
        sys.exit(f"no test ids collected from {a.paths}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    cut = int(len(ids) * a.frac)
    print("\n".join(ids[:cut] if a.part == 1 else ids[cut:]))


if __name__ == "__main__":
    main()
