"""Print the README's trust table (markdown) from a model's trust.json.

Usage: .venv/bin/python scripts/trust_table.py models/consep_unet_regnetx004/trust.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(v: float) -> str:
    return f"{v:+.3f}".replace("-", "−")


def main(path: str) -> int:
    report = json.loads(Path(path).read_text())
    layers, methods = report["layers"], report["methods"]
    cells = {(r["method"], r["layer"]): r for r in report["results"]}
    best = {
        layer: max((m for m in methods if m != "RandomCAM"), key=lambda m: cells[(m, layer)]["faithfulness"])
        for layer in layers
    }
    print("| method | " + " | ".join(f"`{la}`" for la in layers) + " |")
    print("|---" * (len(layers) + 1) + "|")
    print(
        "| random baseline | " + " | ".join(fmt(cells[(methods[0], la)]["random_faithfulness"]) for la in layers) + " |"
    )
    for m in methods:
        row = []
        for la in layers:
            r = cells[(m, la)]
            score = fmt(r["faithfulness"])
            score = f"**{score}**" if best[la] == m else score
            text = f"{score} ({r['beats_random_rate'] * 100:.0f} %)"
            if m != "RandomCAM":
                rate = r["sanity_pass_rate"] * 100
                passed = f"pass {rate:.0f} %" if rate >= 50 else f"**pass {rate:.0f} %**"
                rho = r["sanity_abs_rho_median"]
                rho = "—" if rho is None else f"{rho:.2f}"
                collapsed = r["sanity_collapsed_rate"] * 100
                shown = f", shown constant {collapsed:.0f} %" if collapsed else ""
                text += f", \\|raw\\| ρ {rho} {passed}{shown}".replace("-", "−")
            row.append(text)
        print(f"| {m if m != 'RandomCAM' else 'RandomCAM (seeded per image)'} | " + " | ".join(row) + " |")
    mask = cells[(methods[0], layers[0])]["target_mask_faithfulness"]
    print(
        f"\ntarget mask as a map: {fmt(mask)}; {report['tiles']} tiles, {report['seconds']:.0f} s, {report['measured']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
