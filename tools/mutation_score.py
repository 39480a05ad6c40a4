"""Print the mutation score of the last `mutmut run` (make mutation), per module, and the survivors.

    python tools/mutation_score.py [--equivalent tools/mutation_equivalent.txt] [--no-diff]

Killed and timed-out mutants count as detected. Mutants never run ("not checked", as after a
sampled run: make mutation MUTATION_SAMPLE=N) are left out; the score is then an estimate, shown
with its 95% Wilson interval (the run mutants as a random sample of the module's). Mutants listed
in the equivalent file (one name per line, then `#` and why no test can tell them apart) are left
out of the score; every other survivor is listed with its diff's changed line, so a new one is
easy to judge.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

DETECTED = {"killed", "timeout", "segfault"}


def statuses() -> dict[str, str]:
    out = subprocess.run(["mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            found[name] = status
    return found


def equivalents(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        name, _, why = line.partition("#")
        if name.strip():
            out[name.strip()] = why.strip()
    return out


def changed_line(name: str) -> str:
    diff = subprocess.run(["mutmut", "show", name], capture_output=True, text=True).stdout
    plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return plus[0] if plus else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equivalent", default=str(Path(__file__).with_name("mutation_equivalent.txt")))
    parser.add_argument("--no-diff", action="store_true", help="list survivors without their changed line")
    args = parser.parse_args()
    found = statuses()
    if not found:
        print("no mutmut results: run `make mutation` first", file=sys.stderr)
        return 1
    equivalent = equivalents(Path(args.equivalent))
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for name, status in found.items():
        module = name.partition("__mutmut_")[0].rsplit(".", 1)[0]
        kind = "equivalent" if name in equivalent else status
        per_module[module][kind] += 1
        if status not in DETECTED and name not in equivalent and status != "not checked":
            survivors.append((name, status))
    columns = ("killed", "timeout", "survived", "no tests", "equivalent", "not checked")
    print(f"{'module':28s}" + "".join(f"{c:>12s}" for c in columns) + f"{'score':>9s}  95% interval (when sampled)")
    totals = Counter()
    for module in sorted(per_module):
        counts = per_module[module]
        totals.update(counts)
        cells = "".join(f"{counts[c]:>12d}" for c in columns)
        print(f"{module:28s}{cells}{score(counts):>9s}  {interval(counts)}")
    print(f"{'all':28s}" + "".join(f"{totals[c]:>12d}" for c in columns) + f"{score(totals):>9s}  {interval(totals)}")
    print(f"\nsurvivors not marked equivalent ({len(survivors)}):")
    for name, status in sorted(survivors):
        print(f"  {status:10s} {name}" + ("" if args.no_diff else f": {changed_line(name)}"))
    return 0


def detected_of_judged(counts: Counter) -> tuple[int, int]:
    detected = sum(counts[s] for s in DETECTED)
    return detected, detected + counts["survived"] + counts["no tests"] + counts["suspicious"]


def score(counts: Counter) -> str:
    detected, judged = detected_of_judged(counts)
    return f"{100 * detected / judged:.1f}%" if judged else "-"


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion k / n (n > 0)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(counts: Counter) -> str:
    """The 95% interval of the score when only a sample of the mutants was run, else ''."""
    detected, judged = detected_of_judged(counts)
    if not judged or not counts["not checked"]:
        return ""
    low, high = wilson(detected, judged)
    return f"[{100 * low:.1f}%, {100 * high:.1f}%]"


if __name__ == "__main__":
    sys.exit(main())
