// Private to data/: image files without OpenCV's imgcodecs. JPEG goes
// through TurboJPEG (jpeg.cpp), PNG through libpng (png.cpp). imgcodecs pulls
// in GDAL, poppler and HDF5 (~170 MiB of packages), more than a GPU machine
// without apt can be sent; core + imgproc, TurboJPEG and libpng are small.
// The pixels are those OpenCV's imdecode gave for the same files (it runs the
// same two libraries with the same settings); tests/data/codec_test.cpp
// compares them wherever imgcodecs is installed.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace atelier::data::detail {

// Decoded images above this many pixels are refused, as OpenCV refuses them
// (CV_IO_MAX_IMAGE_PIXELS): a forged header must not make us allocate gigabytes.
constexpr int64_t kMaxPixels = int64_t{1} << 30;

// True when `bytes` start with the PNG signature.
bool looks_like_png(const std::vector<uchar>& bytes);

// A PNG as RGB CV_8UC3 like imdecode(IMREAD_COLOR): palettes and grey
// expanded, 16-bit samples cut to their high byte, alpha dropped. An empty
// Mat and a reason in `why` when it cannot be decoded.
cv::Mat decode_png(const std::vector<uchar>& bytes, std::string& why);

// A JPEG at full size as RGB CV_8UC3 (greyscale expanded, CMYK converted as
// OpenCV does), EXIF orientation applied. Same failure contract.
cv::Mat decode_jpeg(const std::vector<uchar>& bytes, std::string& why);

// RGB CV_8UC3 or grey CV_8UC1 as PNG (zlib's default level) or JPEG (4:2:0
// chroma for colour, as OpenCV writes it; quality 1..100). Throw
// std::runtime_error when the library fails.
std::vector<uchar> encode_png(const cv::Mat& image);
std::vector<uchar> encode_jpeg(const cv::Mat& image, int quality, bool progressive);

}  // namespace atelier::data::detail
