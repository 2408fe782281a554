// Private to data/: decoding a training image no larger than training needs.
//
// A JPEG is decoded by TurboJPEG with DCT scaling: libjpeg-turbo can produce
// the image at 1/2, 1/4 or 1/8 of its size for much less work than a full
// decode followed by a bigger resize, because it skips the high frequencies
// instead of computing and then averaging them away. Greyscale JPEGs stay one
// channel. Every other format decodes at full size (codec.h). The folder
// loader and the loader service both decode through decode_for_training, so
// they see the same pixels.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace atelier::data::detail {

// A DCT scaling factor num/denom as TurboJPEG lists them.
struct JpegScale {
  int num = 1;
  int denom = 1;
  // The scaled length of a side, rounded up like TurboJPEG's TJSCALED.
  int scaled(int side) const { return (side * num + denom - 1) / denom; }
};

// The cheapest of TurboJPEG's scaling factors that still leaves the shorter
// side of a width x height JPEG at least `min_shorter` pixels, so the resize
// after decoding never has to enlarge what the full image would not: the
// smallest of 1/8, 1/4 and 1/2 that does, else 1/1 (also when min_shorter <=
// 0). TurboJPEG's other M/8 factors cost more to decode than 1/2 (3/8) or
// 1/1 (5/8, 3/4, 7/8) (jpeg.cpp has the measurements), so they are never chosen.
JpegScale jpeg_scale_for(int width, int height, int64_t min_shorter);

// Decodes encoded image bytes (JPEG, PNG) for training at a shorter side
// of `min_shorter` pixels: a JPEG at jpeg_scale_for(...) of its size with its
// EXIF orientation applied like OpenCV does, a PNG at full size. Returns RGB
// CV_8UC3, or CV_8UC1 for a greyscale JPEG (its R = G = B, so callers expand
// it only after resizing: a third of the work, same bytes). On failure
// returns an empty Mat and sets `why`.
cv::Mat decode_for_training(const std::vector<uchar>& bytes, int64_t min_shorter, std::string& why);

// The EXIF orientation (1..8, TIFF tag 0x0112) of a JPEG; 1 when it has none
// or the EXIF block cannot be read.
int exif_orientation(const std::vector<uchar>& bytes);

}  // namespace atelier::data::detail
