"""Move the built-in models from smp's deprecated ``timm-regnetx_004`` encoder to the timm
universal encoder (``tu-regnetx_004``) and prove the outputs the same.

The two encoders wrap the same timm RegNet under the same parameter names, so the weights load
unchanged; only ``config.json``'s ``encoder_name`` changes. Prints the largest |Δ logit| on every
sample tile, for each built-in model, and the layer names both offer.

    .venv/bin/python scripts/convert_encoders.py            # compare only
    .venv/bin/python scripts/convert_encoders.py --write    # and rewrite config.json where equal
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RENAMES = {"timm-regnetx_004": "tu-regnetx_004"}


def main() -> int:
    import numpy as np
    import segmentation_models_pytorch as smp
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    from cam_core.model import layers, models
    from cam_core.paths import SAMPLES_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(SAMPLES_DIR.glob("*.png"))]
    for name, info in models.builtin_registry().items():
        folder = Path(info["path"])
        config = json.loads((folder / "config.json").read_text())
        current = config["encoder_name"]  # once converted, compared with the deprecated name again
        old_name = next((old for old, new in RENAMES.items() if new == current), current)
        new_name = RENAMES.get(old_name, old_name)
        built = {}
        for enc in (old_name, new_name):
            kwargs = {k: v for k, v in config.items() if k != "_model_class"} | {
                "encoder_name": enc,
                "encoder_weights": None,
            }
            model = getattr(smp, config["_model_class"])(**kwargs)
            model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
            built[enc] = model.eval()
        worst = 0.0
        with torch.no_grad():
            for tile in tiles:
                loaded = models.load(name)
                x = models.preprocess(tile, loaded.spec)
                a, b = built[old_name](x), built[new_name](x)
                worst = max(worst, float((a - b).abs().max()))
        names = {
            enc: sorted(
                layers.spatial_layers(models.LoadedModel(name, folder, m, loaded.spec, torch.device("cpu"), 32))
            )
            for enc, m in built.items()
        }
        same_layers = names[old_name] == names[new_name]
        print(
            f"{name}: {old_name} → {new_name}: max |Δ logit| {worst:.3g} on {len(tiles)} tiles; same layer names: {same_layers}"
        )
        if args.write and current != new_name and worst == 0.0 and same_layers:
            config["encoder_name"] = new_name
            (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            print(f"  {folder.name}/config.json rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
