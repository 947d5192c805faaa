"""The README's shortcut-audit table from the records ``python -m cam_core audit --out`` wrote.

One row per mark × class, one column group per model: calls flipped with the mark / with a neutral
patch, the excess the rule flags, and the CAM with the most mass on the mark.

    .venv/bin/python scripts/audit_table.py models/consep_unet_marker_teaching/audit.json \
        models/consep_unet_regnetx004/audit.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cell(row: dict) -> str:
    flag = " **flagged**" if row["matters"] else ""
    top = max(row["mass"], key=row["mass"].get) if row["mass"] else None
    cam = f"; CAM {row['mass'][top]:.0%} ({top})" if top else ""
    return f"{row['flip']:.1%} / {row['control']:.1%} → **{row['excess']:+.1%}**{flag}{cam}"


def main(paths: list[str]) -> int:
    records = [json.loads(Path(p).read_text()) for p in paths]
    print("| mark (its area) | class | " + " | ".join(r["model"] for r in records) + " |")
    print("|---|---|" + "---|" * len(records))
    by_key = [{(row["marker"], row["cls"]): row for row in r["rows"]} for r in records]
    for key, row in by_key[0].items():
        cells = " | ".join(cell(b[key]) for b in by_key)
        print(f"| {key[0]} ({row['area_share']:.1%}) | {key[1]} | {cells} |")
    for r in records:
        flagged = "; ".join(f"{m} ({', '.join(c)})" for m, c in r["flagged"].items()) or "nothing"
        print(f"\n{r['model']} @ {r['layer']}: {r['tiles']} tiles in {r['seconds']:.0f} s; flagged: {flagged}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
