#!/usr/bin/python3
"""Writes the reference features of tests/models/squeezenet_test.cpp.

Usage: /usr/bin/python3 make_squeezenet_fixture.py WEIGHTS_DIR OUTDIR

Loads the shipped .npy weights (conv0..conv25 in network order) into
torchvision's squeezenet1_1, runs a seeded batch of 2 images in [-1, 1]
(48x40 px, so the ceil-mode pools round) normalised with ImageNet's mean and
std, and saves as .npy: input.npy (the [-1, 1] images), features_<i>.npy
(the output of features[i], i = 0..12) and logits.npy.
"""
import os
import sys

import numpy as np
import torch
import torchvision


def main(weights_dir, out):
    os.makedirs(out, exist_ok=True)
    net = torchvision.models.squeezenet1_1().eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 26
    with torch.no_grad():
        for i, conv in enumerate(convs):
            for kind in ("weight", "bias"):
                path = os.path.join(weights_dir, "weights", f"squeezenet0_conv{i}_{kind}.npy")
                getattr(conv, kind).copy_(torch.from_numpy(np.load(path)))

        torch.manual_seed(23)
        images = torch.rand(2, 3, 48, 40) * 2 - 1
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = ((images + 1) / 2 - mean) / std
        np.save(os.path.join(out, "input.npy"), images.numpy())
        for i, layer in enumerate(net.features):
            x = layer(x)
            np.save(os.path.join(out, f"features_{i}.npy"), x.numpy())
        np.save(os.path.join(out, "logits.npy"), net.classifier(x).flatten(1).numpy())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
