"""Print the mutation score of the last `mutmut run` (make mutation), per module, and the survivors.

    python tools/mutation_score.py [--equivalent tools/mutation_equivalent.txt]

Killed and timed-out mutants count as detected. Mutants listed in the equivalent file (one
name per line, then `#` and why no test can tell them apart) are left out of the score; every
other survivor is listed with its diff's changed line, so a new one is easy to judge.
"""

from __future__ import annotations

import argparse
import re
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
    args = parser.parse_args()
    found = statuses()
    if not found:
        print("no mutmut results: run `make mutation` first", file=sys.stderr)
        return 1
    equivalent = equivalents(Path(args.equivalent))
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for name, status in found.items():
        module = re.sub(r"\.x[^.]*__mutmut_\d+$|\.x_.*__mutmut_\d+$", "", name)
        kind = "equivalent" if name in equivalent else status
        per_module[module][kind] += 1
        if status not in DETECTED and name not in equivalent and status != "not checked":
            survivors.append((name, status))
    columns = ("killed", "timeout", "survived", "no tests", "equivalent", "not checked")
    print(f"{'module':28s}" + "".join(f"{c:>12s}" for c in columns) + f"{'score':>9s}")
    totals = Counter()
    for module in sorted(per_module):
        counts = per_module[module]
        totals.update(counts)
        print(f"{module:28s}" + "".join(f"{counts[c]:>12d}" for c in columns) + f"{score(counts):>9s}")
    print(f"{'all':28s}" + "".join(f"{totals[c]:>12d}" for c in columns) + f"{score(totals):>9s}")
    print(f"\nsurvivors not marked equivalent ({len(survivors)}):")
    for name, status in sorted(survivors):
        print(f"  {status:10s} {name}: {changed_line(name)}")
    return 0


def score(counts: Counter) -> str:
    detected = sum(counts[s] for s in DETECTED)
    judged = detected + counts["survived"] + counts["no tests"] + counts["suspicious"]
    return f"{100 * detected / judged:.1f}%" if judged else "-"


if __name__ == "__main__":
    sys.exit(main())
