"""PyTorch twins of atelier's C++ networks, for weights written by `atelier export`.

`atelier export --checkpoint runs/x --out g.pt` writes a trained AdaIN-GAN
generator as a plain state dict. This file defines the same network in
PyTorch with exactly the C++ module's parameter and buffer names, so the
state dict loads strictly and the model gives the same images::

    import torch
    import atelier_models  # this file: put python/ on sys.path or copy it

    state = torch.load("g.pt")
    g = atelier_models.AdaINGenerator.from_state_dict(state)  # width read from the weights
    # or: g = atelier_models.AdaINGenerator(width=64); g.load_state_dict(state)
    g.eval()
    with torch.no_grad():
        out = g(content, style, alpha=1.0)  # [N, 3, H, W] in [-1, 1]; H, W multiples of 8

Images are float RGB in [-1, 1] (pixel / 127.5 - 1), NCHW, as everywhere in
atelier. `stylize_mixed(content, [s1, s2], [0.5, 0.5], alpha)` interpolates
styles the way `atelier stylize --style s1 --style s2 --weights 0.5,0.5` does.

A run with model.encoder: squeezenet1_1 (the demo's) needs the encoder's
layers: `AdaINGenerator.from_state_dict(state, encoder="squeezenet1_1",
content_layer="fire2", style_layers=["relu1", "fire2", "fire3", "fire4"])`
(`atelier export` prints the call for its checkpoint).

Only torch is needed (no torchvision). The layer layout must follow
models/vgg.cpp, models/squeezenet.cpp and models/generator.cpp;
tests/launcher/export_command_test.cpp checks that a C++ output and this
module's output agree.
"""
from collections import OrderedDict

import torch
from torch import nn

# torchvision vgg19().features up to relu4_1: (index, in, out) of each conv as
# multiples of the width (0 = the 3 RGB channels); the pools' indices; the
# last index of each slice (relu1_1, relu2_1, relu3_1, relu4_1).
_CONVS = {0: (0, 1), 2: (1, 1), 5: (1, 2), 7: (2, 2), 10: (2, 4), 12: (4, 4), 14: (4, 4), 16: (4, 4), 19: (4, 8)}
_POOLS = {4, 9, 18}
_SLICE_ENDS = (1, 6, 11, 20)


def _vgg_layer(index, width):
    if index in _CONVS:
        cin, cout = _CONVS[index]
        return nn.Conv2d(3 if cin == 0 else cin * width, cout * width, 3, padding=1)
    if index in _POOLS:
        return nn.MaxPool2d(2, stride=2)
    return nn.ReLU()


class VGGEncoder(nn.Module):
    """Frozen VGG-19 conv1_1..relu4_1; layers keep torchvision's indices as names."""

    def __init__(self, width=64):
        super().__init__()
        start = 0
        for number, end in enumerate(_SLICE_ENDS, 1):
            layers = OrderedDict((str(i), _vgg_layer(i, width)) for i in range(start, end + 1))
            setattr(self, f"slice{number}", nn.Sequential(layers))
            start = end + 1
        self.register_buffer("imagenet_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("imagenet_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward_features(self, images):
        x = ((images + 1.0) * 0.5 - self.imagenet_mean) / self.imagenet_std
        features = []
        for layers in (self.slice1, self.slice2, self.slice3, self.slice4):
            x = layers(x)
            features.append(x)
        return features

    def forward(self, images):
        return self.forward_features(images)[-1]


def channel_mean_std(features, eps=1e-5):
    mean = features.mean(dim=(2, 3), keepdim=True)
    var = features.var(dim=(2, 3), unbiased=False, keepdim=True)
    return mean, (var + eps).sqrt()


def adain(content_features, style_features, eps=1e-5):
    content_mean, content_std = channel_mean_std(content_features, eps)
    style_mean, style_std = channel_mean_std(style_features, eps)
    return (content_features - content_mean) / content_std * style_std + style_mean


class Decoder(nn.Module):
    """Reflection-padded 3x3 convs with nearest upsampling, mirroring the encoder; tanh output."""

    def __init__(self, width=64):
        super().__init__()
        w = width
        layers = []

        def conv(cin, cout, relu=True):
            layers.extend([nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)] + ([nn.ReLU()] if relu else []))

        def upsample():
            layers.append(nn.Upsample(scale_factor=2.0, mode="nearest"))

        conv(8 * w, 4 * w)
        upsample()
        for _ in range(3):
            conv(4 * w, 4 * w)
        conv(4 * w, 2 * w)
        upsample()
        conv(2 * w, 2 * w)
        conv(2 * w, w)
        upsample()
        conv(w, w)
        conv(w, 3, relu=False)
        layers.append(nn.Tanh())
        self.layers = nn.Sequential(*layers)

    def forward(self, features):
        return self.layers(features)


# ---------------------------------------------------------------------------
# SqueezeNet 1.1 (model.encoder: squeezenet1_1), as models/squeezenet.cpp:
# torchvision's squeezenet1_1().features, layers named by their index, cut
# into slices that end at the taps (the content and style layers).

# Fire modules: features index -> (in, squeeze, expand) channels.
_FIRES = {3: (64, 16, 64), 4: (128, 16, 64), 6: (128, 32, 128), 7: (256, 32, 128),
          9: (256, 48, 192), 10: (384, 48, 192), 11: (384, 64, 256), 12: (512, 64, 256)}
# The layers that can be taps: name -> (features index, channels, downsampling).
SQUEEZENET_LAYERS = {"relu1": (1, 64, 2), "fire1": (3, 128, 4), "fire2": (4, 128, 4), "fire3": (6, 256, 8),
                     "fire4": (7, 256, 8), "fire5": (9, 384, 16), "fire6": (10, 384, 16), "fire7": (11, 512, 16),
                     "fire8": (12, 512, 16)}


class Fire(nn.Module):
    """squeeze 1x1 -> ReLU -> concat(ReLU(expand 1x1), ReLU(expand 3x3)), torchvision's Fire."""

    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(s)), torch.relu(self.expand3x3(s))], 1)


def _squeezenet_layer(index):
    if index == 0:
        return nn.Conv2d(3, 64, 3, stride=2)
    if index == 1:
        return nn.ReLU()
    if index in (2, 5, 8):
        return nn.MaxPool2d(3, stride=2, ceil_mode=True)
    return Fire(*_FIRES[index])


class SqueezeNetEncoder(nn.Module):
    """Frozen SqueezeNet 1.1 up to its deepest tap; forward() runs to the content layer."""

    def __init__(self, content_layer="fire2", style_layers=("relu1", "fire2", "fire3", "fire4")):
        super().__init__()
        for name in (content_layer, *style_layers):
            if name not in SQUEEZENET_LAYERS:
                raise ValueError(f"SqueezeNet 1.1 has no layer {name!r}; its layers: {', '.join(SQUEEZENET_LAYERS)}")
        taps = sorted({SQUEEZENET_LAYERS[name][0] for name in (content_layer, *style_layers)})
        start = 0
        for number, end in enumerate(taps, 1):
            layers = OrderedDict((str(i), _squeezenet_layer(i)) for i in range(start, end + 1))
            setattr(self, f"slice{number}", nn.Sequential(layers))
            start = end + 1
        self.content_slices = taps.index(SQUEEZENET_LAYERS[content_layer][0]) + 1
        self.register_buffer("imagenet_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("imagenet_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images):
        x = ((images + 1.0) * 0.5 - self.imagenet_mean) / self.imagenet_std
        for number in range(1, self.content_slices + 1):
            x = getattr(self, f"slice{number}")(x)
        return x


class UpsamplingDecoder(nn.Module):
    """From `channels` at 1/2^upsamplings of the image: per upsampling a conv to 2^(left) * width channels, x2,
    a conv; then a conv to RGB; tanh. Resized (bilinear) to the content's size, as SqueezeNet rounds sizes."""

    def __init__(self, channels, upsamplings, width=64, tanh=True):
        super().__init__()
        layers = []

        def conv(cin, cout, relu=True):
            layers.extend([nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)] + ([nn.ReLU()] if relu else []))

        for i in range(upsamplings):
            out = (1 << (upsamplings - 1 - i)) * width
            conv(channels, out)
            layers.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
            conv(out, out)
            channels = out
        conv(channels, 3, relu=False)
        if tanh:
            layers.append(nn.Tanh())
        self.layers = nn.Sequential(*layers)

    def forward(self, features, like):
        image = self.layers(features)
        if image.shape[-2:] != like.shape[-2:]:
            image = nn.functional.interpolate(image, size=like.shape[-2:], mode="bilinear", align_corners=False)
        return image


class AdaINGenerator(nn.Module):
    """G(content, style): encoder -> AdaIN -> decoder, as atelier's C++ AdaINGenerator.

    encoder="vgg19" (width: the encoder's and decoder's), or "squeezenet1_1" with the run's
    model.content_layer and model.style_layers (width: model.decoder_width; tanh=False for a run
    with model.decoder_output: linear). `atelier export` prints the call that fits its checkpoint.
    """

    def __init__(self, width=64, encoder="vgg19", content_layer="fire2",
                 style_layers=("relu1", "fire2", "fire3", "fire4"), tanh=True):
        super().__init__()
        if encoder == "vgg19":
            self.encoder = VGGEncoder(width)
            self.decoder = Decoder(width)
        elif encoder == "squeezenet1_1":
            self.encoder = SqueezeNetEncoder(content_layer, style_layers)
            _, channels, downsampling = SQUEEZENET_LAYERS[content_layer]
            self.decoder = UpsamplingDecoder(channels, downsampling.bit_length() - 1, width, tanh)
        else:
            raise ValueError(f"encoder must be vgg19 or squeezenet1_1, got {encoder!r}")

    @classmethod
    def from_state_dict(cls, state, **squeezenet):
        """A generator of the width the weights have, with them loaded (strict). A SqueezeNet one needs
        encoder="squeezenet1_1", content_layer=..., style_layers=... (as `atelier export` prints)."""
        if squeezenet.get("encoder", "vgg19") == "vgg19":
            model = cls(width=state["encoder.slice1.0.weight"].shape[0], **squeezenet)
        else:
            probe = cls(width=1, **squeezenet)
            ups = sum(isinstance(layer, nn.Upsample) for layer in probe.decoder.layers)
            first = state["decoder.layers.1.weight"].shape[0]
            model = cls(width=first >> (ups - 1), **squeezenet)
        model.load_state_dict(state)
        return model

    def stylize_mixed(self, content, styles, weights, alpha=1.0):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if len(weights) != len(styles) or min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"need one weight >= 0 per style, summing to 1; got {list(weights)}")
        content_features = self.encoder(content)
        target = torch.zeros_like(content_features)
        for style, weight in zip(styles, weights):
            style_features = self.encoder(style)
            if style_features.shape[0] == 1:
                style_features = style_features.expand(content_features.shape[0], -1, -1, -1)
            target = target + weight * adain(content_features, style_features)
        target = alpha * target + (1.0 - alpha) * content_features
        if isinstance(self.decoder, UpsamplingDecoder):
            return self.decoder(target, content)
        return self.decoder(target)

    def forward(self, content, style, alpha=1.0):
        return self.stylize_mixed(content, [style], [1.0], alpha)


# ---------------------------------------------------------------------------
# CycleGAN: `atelier export --direction a2b|b2a` writes one ResnetGenerator.
# Layout of models/resnet_generator.cpp (the reference implementation's
# ResnetGenerator with instance norm); names match the C++ module's.


class ResnetBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-w, d2w, d4w, blocks x R4w, u2w, uw, c7s1-3, tanh (CycleGAN's generator)."""

    def __init__(self, width=64, blocks=9):
        super().__init__()
        w = width
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, w, 7), nn.InstanceNorm2d(w), nn.ReLU(True)]
        for i in range(2):
            layers += [nn.Conv2d(w << i, w << (i + 1), 3, stride=2, padding=1), nn.InstanceNorm2d(w << (i + 1)),
                       nn.ReLU(True)]
        layers += [ResnetBlock(4 * w) for _ in range(blocks)]
        for i in (2, 1):
            layers += [nn.ConvTranspose2d(w << i, w << (i - 1), 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(w << (i - 1)), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    @classmethod
    def from_state_dict(cls, state):
        """A generator of the width and depth the weights have, with them loaded (strict)."""
        blocks = len({key.split(".")[1] for key in state if ".conv_block." in key})
        model = cls(width=state["model.1.weight"].shape[0], blocks=blocks)
        model.load_state_dict(state)
        return model

    def forward(self, images):
        return self.model(images)


class PatchDiscriminator(nn.Module):
    """models/discriminator.cpp with instance norm: 4x4 convs, LeakyReLU(0.2), one logit per patch."""

    def __init__(self, width=64, layers=3):
        super().__init__()
        def channels(n):
            return width * (1 << min(n, 3))
        seq = [nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for n in range(1, layers + 1):
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(channels(n - 1), channels(n), 4, stride=stride, padding=1, bias=False),
                    nn.InstanceNorm2d(channels(n)), nn.LeakyReLU(0.2)]
        seq.append(nn.Conv2d(channels(layers), 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*seq)

    def forward(self, images):
        return self.layers(images)
