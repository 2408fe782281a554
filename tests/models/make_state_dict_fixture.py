#!/usr/bin/python3
"""Writes the Python-made fixtures of tests/models/state_dict_test.cpp.

Usage: /usr/bin/python3 make_state_dict_fixture.py OUTDIR {vgg,formats}

vgg      vgg19.pth: torchvision's real, full vgg19 state dict (classifier
         included) with seeded random values, saved exactly as users save it;
         vgg19_legacy.pth: the same in the legacy (pre-1.6) format, the
         layout of torchvision's own download vgg19-dcbb9e9d.pth;
         vgg_normalised.pth, vgg_normalised_legacy.pth: AdaIN's encoder
         network in both formats; decoder.pth, decoder_legacy.pth: AdaIN's
         decoder, both formats;
         vgg19_reference.pth: a plain dict torch::pickle_load can read (an
         independent C++ reader) with an input batch, the relu4_1 output of
         features[:21] on it, every tensor's float64 sum, and a few copies.
formats  formats.pth: a state-dict-shaped OrderedDict covering every dtype,
         views (offset, stride, expand, channels_last), a shared storage and
         an nn.Parameter; formats_protocol4.pth: the same with pickle
         protocol 4; formats_legacy.pth: the same in the pre-1.6 non-zip
         format.
"""
import collections
import os
import sys

import torch


def write_vgg(out):
    import torchvision

    torch.manual_seed(0)
    vgg = torchvision.models.vgg19().eval()
    state = vgg.state_dict()
    torch.save(state, os.path.join(out, "vgg19.pth"))
    torch.save(state, os.path.join(out, "vgg19_legacy.pth"), _use_new_zipfile_serialization=False)

    x = torch.rand(2, 3, 32, 32) * 2 - 1  # images in [-1, 1], as atelier feeds them
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        relu4_1 = vgg.features[:21](((x + 1) / 2 - mean) / std)
    copies = ["features.0.weight", "features.34.bias", "classifier.6.weight"]
    reference = {
        "input": x,
        "relu4_1": relu4_1,
        "sums": {key: float(value.double().sum()) for key, value in state.items()},
        "copies": {key: state[key].clone() for key in copies},
    }
    adain = adain_vgg_normalised().eval()
    torch.save(adain.state_dict(), os.path.join(out, "vgg_normalised.pth"))
    torch.save(adain.state_dict(), os.path.join(out, "vgg_normalised_legacy.pth"),
               _use_new_zipfile_serialization=False)
    # 36 px: the ceil-mode pools round 9 up to 5 where floor would give 4.
    y = torch.rand(2, 3, 36, 36) * 2 - 1
    with torch.no_grad():
        y01 = (y + 1) / 2  # AdaIN's network takes RGB in [0, 1]
        reference["adain_input"] = y
        reference["adain_features"] = [adain[:end](y01) for end in (4, 11, 18, 31)]
    decoder = adain_decoder().eval()
    torch.save(decoder.state_dict(), os.path.join(out, "decoder.pth"))
    torch.save(decoder.state_dict(), os.path.join(out, "decoder_legacy.pth"), _use_new_zipfile_serialization=False)
    z = torch.rand(1, 512, 4, 4)  # relu4_1-like features: non-negative
    with torch.no_grad():
        reference["decoder_input"] = z
        reference["decoder_output"] = decoder(z)  # AdaIN's image range, [0, 1]
    reference.update(pretrained_stylization(adain, decoder))
    torch.save(reference, os.path.join(out, "vgg19_reference.pth"))


def pretrained_stylization(vgg, decoder):
    """AdaIN's pretrained model end to end, as `atelier stylize --vgg-weights
    --decoder-weights` runs it: decoder(AdaIN(relu4_1(c), relu4_1(s))) on
    images of 8-bit values (what PNG files hold); AdaIN's std is the paper's,
    sqrt(biased variance + 1e-5). The output is clamped to [0, 1], as an
    image file keeps it."""
    g = torch.Generator().manual_seed(3)
    content = torch.randint(0, 256, (3, 32, 32), generator=g).float()
    style = torch.randint(0, 256, (3, 40, 48), generator=g).float()

    def mean_std(f):
        return f.mean((2, 3), keepdim=True), (f.var((2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()

    with torch.no_grad():
        fc = vgg[:31](content.unsqueeze(0) / 255)
        fs = vgg[:31](style.unsqueeze(0) / 255)
        (cm, cs), (sm, ss) = mean_std(fc), mean_std(fs)
        out = decoder((fc - cm) / cs * ss + sm)[0]
    return {"stylize_content": content, "stylize_style": style, "stylize_output": out.clamp(0, 1),
            "stylize_unclamped": out}


def adain_decoder():
    """AdaIN's decoder.pth network (naoto0804/pytorch-AdaIN's net.decoder),
    rebuilt from its published layout: relu4_1 back to RGB, each 3x3 conv
    after a 1-pixel reflection pad, nearest x2 upsampling where the encoder
    pools, no activation at the end; 29 layers. Seeded random values (He
    init), the last layer's scaled so that outputs span [0, 1]."""
    nn = torch.nn
    torch.manual_seed(2)
    layers = []
    for item in [(512, 256), "up", (256, 256), (256, 256), (256, 256), (256, 128), "up", (128, 128),
                 (128, 64), "up", (64, 64), (64, 3)]:
        if item == "up":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            continue
        layers += [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(item[0], item[1], (3, 3)), nn.ReLU()]
    layers.pop()  # the last conv paints the image: no ReLU
    assert len(layers) == 29
    he_init(layers)
    with torch.no_grad():  # images around mid-grey that span much of [0, 1], as a trained decoder's do
        layers[-1].weight *= 0.1
        layers[-1].bias.fill_(0.5)
    return nn.Sequential(*layers)


def he_init(layers):
    """He-initialised convolutions keep the activations' scale through the
    layers, as trained networks do; PyTorch's default init shrinks them
    ~100-fold over VGG's depth, and a decoder's output would then hardly
    depend on its input (a test of the whole chain would see only biases)."""
    for layer in layers:
        if isinstance(layer, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            torch.nn.init.uniform_(layer.bias, -0.05, 0.05)


def adain_vgg_normalised():
    """AdaIN's vgg_normalised.pth network (Huang & Belongie, 2017, as
    naoto0804/pytorch-AdaIN's net.vgg lists it), rebuilt from its published
    layout: a 1x1 conv (3 -> 3) that normalises the input, then VGG-19's 3x3
    convs each after a 1-pixel reflection pad, ceil-mode 2x2 max pools
    between blocks; 53 layers, relu5_4 last. Seeded random values (He init)."""
    nn = torch.nn
    torch.manual_seed(1)
    layers = [nn.Conv2d(3, 3, (1, 1))]
    channels = 3
    for block, (width, convs) in enumerate([(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]):
        if block > 0:
            layers.append(nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True))
        for _ in range(convs):
            layers += [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(channels, width, (3, 3)), nn.ReLU()]
            channels = width
    assert len(layers) == 53
    he_init(layers)
    return nn.Sequential(*layers)


def formats_state():
    m = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = collections.OrderedDict()
    state["float32"] = m
    state["float64"] = torch.arange(6, dtype=torch.float64).reshape(2, 3) / 3
    state["float16"] = torch.tensor([0.5, -2.0, 65504.0, 2.0**-14, 2.0**-24]).half()
    state["bfloat16"] = torch.tensor([1.0, -3.5, 2.0**100, 2.0**-100]).bfloat16()
    state["int64"] = torch.tensor([-1, 0, 2**40, -(2**62), 2**63 - 1])
    state["int32"] = torch.tensor([-(2**31), 7, 2**31 - 1], dtype=torch.int32)
    state["int16"] = torch.tensor([-(2**15), 2**15 - 1], dtype=torch.int16)
    state["int8"] = torch.tensor([-128, 127], dtype=torch.int8)
    state["uint8"] = torch.tensor([0, 255], dtype=torch.uint8)
    state["bool"] = torch.tensor([True, False, True])
    state["scalar"] = torch.tensor(3.25)
    state["empty"] = torch.zeros(0, 3)
    # Views are saved as (whole storage, offset, size, stride), not copied.
    state["transposed"] = m.t()
    state["slice"] = m[1:, ::2]
    state["expanded"] = torch.arange(3.0).expand(4, 3)
    state["channels_last"] = torch.arange(24.0).reshape(1, 2, 3, 4).contiguous(
        memory_format=torch.channels_last)
    state["parameter"] = torch.nn.Parameter(torch.full((2, 2), 1.5))
    # What Module.state_dict() attaches; it makes the pickle BUILD the dict.
    state._metadata = collections.OrderedDict([("", {"version": 1})])
    assert state["transposed"].storage().data_ptr() == m.storage().data_ptr()
    assert state["slice"].storage_offset() == 4 and state["slice"].stride() == (4, 2)
    return state


def write_formats(out):
    state = formats_state()
    torch.save(state, os.path.join(out, "formats.pth"))
    torch.save(state, os.path.join(out, "formats_protocol4.pth"), pickle_protocol=4)
    torch.save(state, os.path.join(out, "formats_legacy.pth"), _use_new_zipfile_serialization=False)


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("vgg", "formats"):
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    (write_vgg if sys.argv[2] == "vgg" else write_formats)(out)


if __name__ == "__main__":
    main()
