// AdaIN's vgg_normalised.pth (a 1x1 input convolution, reflection padding,
// ceil-mode pools) as the encoder: its relu1_1..relu4_1 features equal those
// Python computes from the same file, in both torch.save formats; the layout
// is detected from the file, and files of other layouts or shapes are
// refused naming the problem. AdaIN's decoder.pth likewise as the decoder.
#include <gtest/gtest.h>

#include "tests/models/state_dict_helpers.h"

using atelier::models::EncoderOptions;
using atelier::models::Encoder;

class AdainVggFormats : public StateDictVgg, public ::testing::WithParamInterface<const char*> {};
class AdainVgg : public StateDictVgg {};
class OtherNetworkFiles : public StateDictFiles {};

TEST_P(AdainVggFormats, FeaturesEqualWhatPythonComputesFromTheSameFile) {
  const auto reference = read_reference(file("vgg19_reference.pth"));
  EXPECT_EQ(atelier::models::detect_vgg_layout(file(GetParam())), "adain");
  Encoder encoder(EncoderOptions{64, file(GetParam())});
  ASSERT_TRUE(encoder->pretrained());
  EXPECT_EQ(encoder->options.layout, "adain");
  torch::NoGradGuard no_grad;
  const auto features = encoder->forward_features(reference.at("adain_input").toTensor());
  const auto expected = reference.at("adain_features").toList();
  ASSERT_EQ(features.size(), 4u);
  ASSERT_EQ(expected.size(), 4u);
  for (size_t i = 0; i < features.size(); ++i) {
    const torch::Tensor want = expected.get(i).toTensor();
    ASSERT_EQ(features[i].sizes(), want.sizes()) << "relu" << i + 1 << "_1";
    const double scale = 1 + want.abs().max().item<double>();
    EXPECT_LT((features[i] - want).abs().max().item<double>(), 1e-4 * scale) << "relu" << i + 1 << "_1";
  }
}

// torchvision's download is in the legacy format; AdaIN's usually is too.
INSTANTIATE_TEST_SUITE_P(ZipAndLegacy, AdainVggFormats,
                         ::testing::Values("vgg_normalised.pth", "vgg_normalised_legacy.pth"),
                         [](const auto& info) {
                           return std::string(std::string(info.param).find("legacy") == std::string::npos ? "zip"
                                                                                                       : "legacy");
                         });

TEST_F(AdainVgg, TheLayoutIsTheFilesAndAnotherIsRefused) {
  EXPECT_EQ(atelier::models::detect_vgg_layout(file("vgg19_legacy.pth")), "torchvision");
  EncoderOptions asked{64, file("vgg_normalised.pth")};
  asked.layout = "torchvision";
  try {
    Encoder encoder(asked);
    ADD_FAILURE() << "an AdaIN file loaded as torchvision's";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("is a AdaIN normalised VGG state dict, but layout 'torchvision' was asked for"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(AdainVgg, AMissingKeyOrAShapeMismatchNamesTheLayer) {
  Encoder encoder(EncoderOptions{64, file("vgg_normalised_legacy.pth")});
  const auto state = load_state_dict(file("vgg_normalised_legacy.pth"));
  auto missing = state;
  missing.erase("9.bias");
  try {
    encoder->load_torchvision(missing);
    ADD_FAILURE() << "a state dict without 9.bias loaded";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("AdaIN normalised VGG state dict has no key '9.bias'"), std::string::npos)
        << e.what();
  }
  auto reshaped = state;
  reshaped["5.weight"] = torch::zeros({64, 64, 1, 1});
  try {
    encoder->load_torchvision(reshaped);
    ADD_FAILURE() << "a 1x1 kernel loaded as conv1_2";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("key '5.weight' has shape [64, 64, 1, 1], expected [64, 64, 3, 3]"),
              std::string::npos)
        << e.what();
  }
}

// A state dict of another network is neither layout.
TEST_F(OtherNetworkFiles, AStateDictOfAnotherNetworkIsNoVgg) {
  const std::string path = archive("other.pth", dict({{"w", tensor("0", int1(2), int1(0), int1(2))}}),
                                   {{"data/0", floats({1, 2})}});
  try {
    atelier::models::detect_vgg_layout(path);
    ADD_FAILURE() << "detected a layout in " << path;
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": not a VGG-19 state dict atelier knows"), std::string::npos)
        << e.what();
  }
}

class AdainDecoderFormats : public StateDictVgg, public ::testing::WithParamInterface<const char*> {};

// AdaIN's decoder paints [0, 1]; ours the same image in [-1, 1].
TEST_P(AdainDecoderFormats, OutputIsWhatPythonComputesFromTheSameFileInOurRange) {
  const auto reference = read_reference(file("vgg19_reference.pth"));
  atelier::models::DecoderOptions options;
  options.weights_path = file(GetParam());
  atelier::models::Decoder decoder(options);
  EXPECT_EQ(decoder->options.output, "linear");
  torch::NoGradGuard no_grad;
  const auto output = decoder->forward(reference.at("decoder_input").toTensor());
  const auto expected = reference.at("decoder_output").toTensor() * 2 - 1;
  ASSERT_EQ(output.sizes(), expected.sizes());
  EXPECT_LT((output - expected).abs().max().item<double>(), 1e-4 * (1 + expected.abs().max().item<double>()));
}

INSTANTIATE_TEST_SUITE_P(ZipAndLegacy, AdainDecoderFormats, ::testing::Values("decoder.pth", "decoder_legacy.pth"),
                         [](const auto& info) {
                           return std::string(std::string(info.param).find("legacy") == std::string::npos ? "zip"
                                                                                                       : "legacy");
                         });

TEST_F(AdainVgg, ADecoderOfAnotherWidthNamesTheLayerAndBothShapes) {
  atelier::models::DecoderOptions options;
  options.width = 32;
  options.weights_path = file("decoder_legacy.pth");
  try {
    atelier::models::Decoder decoder(options);
    ADD_FAILURE() << "a width-64 AdaIN decoder loaded at width 32";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(file("decoder_legacy.pth") +
                                         ": AdaIN decoder layer 1 ('1.weight') has shape [256, 512, 3, 3] but a "
                                         "decoder of width 32 needs [128, 256, 3, 3]"),
              std::string::npos)
        << e.what();
  }
  atelier::models::Decoder fresh(atelier::models::DecoderOptions{});
  auto state = load_state_dict(file("decoder.pth"));
  state.erase("25.bias");
  try {
    fresh->load_adain(state, "decoder.pth");
    ADD_FAILURE() << "a decoder without 25.bias loaded";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("decoder.pth: AdaIN decoder has no key '25.bias'"), std::string::npos)
        << e.what();
  }
}

