"""Side by side: two benchmark JSON files (e.g. before and after a change).

    python bench/compare.py bench/results/before.json bench/results/after.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import LABELS, SCENARIOS  # bench/ is not a package when run as a script


def _load(path: str) -> dict:
    return json.loads(Path(path).read_text())["results"]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = _load(argv[0]), _load(argv[1])
    head = (f"{'N':>4}  {'scenario':<33} {'before s':>9} {'after s':>9} {'speedup':>8} "
            f"{'x base before':>13} {'x base after':>12} {'cpu before':>10} {'cpu after':>9}")
    print(head)
    print("-" * len(head))
    for size in after:
        if size not in before:
            continue
        for scenario in ("baseline", "baseline_user_env", *SCENARIOS):
            old, new = before[size].get(scenario), after[size].get(scenario)
            if not old or not new:
                continue
            t0, t1 = old["wall_s"]["median"], new["wall_s"]["median"]
            c0 = old.get("cpu_s", {}).get("median")
            c1 = new.get("cpu_s", {}).get("median")
            r0 = "" if scenario.startswith("baseline") else f"{old['ratio_to_baseline']:.3f}"
            r1 = "" if scenario.startswith("baseline") else f"{new['ratio_to_baseline']:.3f}"
            print(f"{size:>4}  {LABELS[scenario]:<33} {t0:>9.3f} {t1:>9.3f} {t0 / t1:>7.2f}x "
                  f"{r0:>13} {r1:>12} {c0 if c0 is not None else float('nan'):>10.2f} "
                  f"{c1 if c1 is not None else float('nan'):>9.2f}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
