"""Loads an `atelier export` state dict into python/atelier_models.py (strict)
and compares its outputs with the C++ generator's (tests/launcher/export_test.cpp).

usage: /usr/bin/python3 check_export.py SOURCE_DIR g.pt cases.pt [ENCODER CONTENT_LAYER STYLE_LAYER,...]
cases.pt (torch::pickle_save of a dict): content, style_a, style_b, alpha,
expected (G(content, style_a, alpha)), expected_mixed (styles a, b at 0.3, 0.7).
Exit 0 when every output agrees within 1e-4; prints the differences.
"""
import sys

import torch

sys.path.insert(0, sys.argv[1] + "/python")
import atelier_models  # noqa: E402

state = torch.load(sys.argv[2])
cases = torch.load(sys.argv[3])
layers = {}
if len(sys.argv) > 4:  # a SqueezeNet encoder: its taps
    layers = dict(encoder=sys.argv[4], content_layer=sys.argv[5], style_layers=sys.argv[6].split(","))
model = atelier_models.AdaINGenerator.from_state_dict(state, **layers)  # load_state_dict is strict by default
model.eval()
alpha = float(cases["alpha"])
with torch.no_grad():
    single = model(cases["content"], cases["style_a"], alpha)
    mixed = model.stylize_mixed(cases["content"], [cases["style_a"], cases["style_b"]], [0.3, 0.7], alpha)
worst = 0.0
for name, got in (("expected", single), ("expected_mixed", mixed)):
    diff = (got - cases[name]).abs().max().item()
    print(f"{name}: max abs diff {diff:.3g}")
    worst = max(worst, diff)
sys.exit(0 if worst < 1e-4 else 1)
