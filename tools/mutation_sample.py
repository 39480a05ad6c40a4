"""Print a stratified random sample of mutant names, for `mutmut run NAME...` (make mutation MUTATION_SAMPLE=N).

    python tools/mutation_sample.py --size 400 [--seed 8] [--exclude GLOB ...]

The full run of the core modules has ~2800 mutants (hours on 2 cores). A sample estimates the
score: every module (stratum) gets its share of the sample in proportion to its mutants (largest
remainders), drawn without replacement by `random.Random(seed)`, so the pooled fraction of killed
mutants estimates the whole run's. The names come from mutmut's own mutation of the files that
`[tool.mutmut] only_mutate` selects, so they match the names `mutmut run` generates. The output
is ordered so that any prefix of it is again a proportional stratified sample: a run cut short
after whole batches of names still estimates the score.
"""

from __future__ import annotations

import argparse
import fnmatch
import random
import sys
from collections import defaultdict
from pathlib import Path


def all_mutants() -> dict[str, list[str]]:
    """Mutant names per module, as `mutmut run` names them (needs pyproject's [tool.mutmut])."""
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.file_utils import walk_mutatable_files
    from mutmut.utils.format_utils import get_mutant_name

    by_module: dict[str, list[str]] = defaultdict(list)
    for path in walk_mutatable_files():
        mutated = mutate_file_contents(str(path), path.read_text())
        for name in mutated.mutant_names:
            full = get_mutant_name(path, name)
            by_module[module_of(full)].append(full)
    return by_module


def module_of(name: str) -> str:
    """`mimic.training.loop.x_train__mutmut_3` -> `mimic.training.loop` (methods: `...xǁClassǁmethod__mutmut_3`)."""
    return name.partition("__mutmut_")[0].rsplit(".", 1)[0]


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Proportional allocation of `total` draws over strata of `sizes` (largest remainders)."""
    population = sum(sizes.values())
    if total >= population:
        return dict(sizes)
    exact = {k: total * n / population for k, n in sizes.items()}
    shares = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (shares[k] - exact[k], k))[: total - sum(shares.values())]:
        shares[k] += 1
    return shares


def sample(by_module: dict[str, list[str]], size: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    shares = allocate({k: len(v) for k, v in by_module.items()}, size)
    # Each module's draws, in random order, get the positions (i + u) / n in [0, 1); sorting all
    # by position interleaves the modules so that every prefix keeps the proportional shares (+-1).
    placed = []
    for k in sorted(by_module):
        drawn = rng.sample(sorted(by_module[k]), shares[k])
        offset = rng.random()
        placed += [((i + offset) / len(drawn), rng.random(), name) for i, name in enumerate(drawn)]
    return [name for _, _, name in sorted(placed)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, required=True, help="how many mutants to draw in all")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--exclude", nargs="*", default=[], help="glob(s) of mutant names to leave out first")
    args = parser.parse_args()
    if args.size < 1:
        parser.error(f"--size must be at least 1, got {args.size}")
    if not Path("pyproject.toml").is_file():
        parser.error("run from the repository root (needs pyproject.toml's [tool.mutmut])")
    by_module = {
        k: [n for n in v if not any(fnmatch.fnmatch(n, g) for g in args.exclude)] for k, v in all_mutants().items()
    }
    population = sum(len(v) for v in by_module.values())
    names = sample(by_module, args.size, args.seed)
    print(f"{len(names)} of {population} mutants, seed {args.seed}", file=sys.stderr)
    print("\n".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
