"""Loads a cyclegan `atelier export` state dict into
python/atelier_models.ResnetGenerator (strict) and compares its output with
the C++ generator's (tests/launcher/cyclegan_commands_test.cpp).

usage: /usr/bin/python3 check_export_cyclegan.py SOURCE_DIR g.pt cases.pt
cases.pt (torch::pickle_save of a dict): images, expected.
Exit 0 when the output agrees within 1e-4; prints the difference.
"""
import sys

import torch

sys.path.insert(0, sys.argv[1] + "/python")
import atelier_models  # noqa: E402

state = torch.load(sys.argv[2])
cases = torch.load(sys.argv[3])
model = atelier_models.ResnetGenerator.from_state_dict(state)
model.eval()
with torch.no_grad():
    got = model(cases["images"])
diff = (got - cases["expected"]).abs().max().item()
print(f"expected: max abs diff {diff:.3g}")
sys.exit(0 if diff < 1e-4 else 1)
