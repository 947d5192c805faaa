#!/usr/bin/env bash
# Reproduce every figure of the built-in model's card (and the README):
#   1. the decision-rule sweep on the held-out *training* tiles (how the shipped rule was chosen);
#   2. Dice/IoU on the 224 CoNSeP test tiles, as they are and re-stained (Tellez HED-light/strong);
#   3. the sample tiles (the floor of tests/test_builtin_model.py);
#   4. forward+backward latency at 512² against Unet-ResNet34.
# Usage: scripts/model_figures.sh [CONSEP_DIR]   (default ../shared/data/consep)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/consep}"
py=.venv/bin/python
model=models/consep_unet_regnetx004
macro="inflammatory,epithelial,spindle"
echo "== decision rule sweep on held-out training tiles ($(wc -l < $model/val_names.txt) patches)"
for rule in argmax bg:0.2 bg:0.25 bg:0.3 bg:0.35 bg:0.4 bg:0.5 bg:0.7 bg:0.9; do
  $py -m cam_core evaluate --data "$data" --names $model/val_names.txt --rule "$rule" \
      --macro-classes "$macro" --restain none,hed-strong --json 2>/dev/null |
    $py -c "import json,sys; d=json.load(sys.stdin)['settings']; print('$rule', *(f\"{k}: nuclei {v['nuclei_dice']:.4f} macro {v['macro_dice']:.4f}\" for k, v in d.items()), sep='  |  ')"
done
echo "== CoNSeP test split (shipped decision rule)"
$py -m cam_core evaluate --data "$data" --split test --macro-classes "$macro" --restain none,hed-light,hed-strong
echo "== sample tiles"
$py -m cam_core evaluate --data samples --macro-classes "$macro"
echo "== latency"
$py -m cam_core bench --latency --repeats 5
