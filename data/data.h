// data/ — images in, training batches out.
//
// Folders (or explicit files) of JPEG/PNG images are listed once, decoded
// (JPEGs by TurboJPEG, scaled down by 1/2, 1/4 or 1/8 when that still leaves
// the load size; PNGs by libpng), augmented (resize shorter side, random crop, horizontal
// flip, scale to [-1, 1]) and packed into content/style batches by a pool of worker
// threads that runs ahead of training. Everything is a pure function of
// (seed, cursor): the same seed and cursor give the same batches whatever the
// number of workers, which is what exact resume needs.
//
// The same batches can come from a loader service instead (`atelier shard`,
// `atelier serve-data`): images packed into checksummed shards, decoded and
// augmented by servers that share the folder loader's sampler, streamed to
// each rank over TCP (docs/loader-protocol.md). The trainer reads either
// through BatchSource.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace atelier::data {

// A source that cannot be used: missing, empty, unreadable. The message names it.
struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Image files under each source, which is a directory (searched recursively)
// or a single image file. Extensions .jpg .jpeg .png (any case; BMP is not
// read since image files stopped going through OpenCV's imgcodecs). Sorted
// by path so the list is the same on every rank and every run. Throws
// DataError naming a source that does not exist or holds no image.
std::vector<std::string> list_images(const std::vector<std::string>& sources);

struct AugmentOptions {
  int64_t load_size = 144;  // shorter side after resizing (>= crop_size)
  int64_t crop_size = 128;  // square crop taken at a random position
  bool flip = true;         // random horizontal flip with probability 1/2
};

// Decodes an image file to RGB uint8 [H, W, 3]. Throws DataError naming the
// file when it cannot be read or decoded.
torch::Tensor decode_image(const std::string& path);

// Decodes JPEG or PNG bytes to RGB uint8 [H, W, 3], like decode_image.
// Throws DataError naming `name` (a path, a shard key) and why.
torch::Tensor decode_image_bytes(const std::vector<uint8_t>& bytes, const std::string& name);

// Image file bytes of 8-bit pixels, uint8 [H, W, 3] RGB or [H, W, 1] grey:
// PNG by libpng (lossless), JPEG by TurboJPEG (quality 1..100, 4:2:0 chroma
// for colour, as OpenCV wrote them). Throw DataError for other tensors.
std::vector<uint8_t> encode_png(const torch::Tensor& hwc);
std::vector<uint8_t> encode_jpeg(const torch::Tensor& hwc, int quality = 95, bool progressive = false);

// Writes 8-bit pixels (as encode_png takes them) as PNG, or JPEG at quality
// 95, chosen by the extension of `path` (.png .jpg .jpeg, any case). Throws
// DataError naming the path when the extension, the tensor or the write is
// bad; a failed write leaves no file behind.
void write_image_file(const std::string& path, const torch::Tensor& hwc);

// Resizes the shorter side of an RGB uint8 [H, W, 3] image to load_size,
// crops crop_size x crop_size at a position drawn from `seed`, flips it when
// `seed` says so, and returns float [3, crop, crop] in [-1, 1].
torch::Tensor augment(const torch::Tensor& rgb, const AugmentOptions& options, uint64_t seed);

// Resizes without randomness (shorter side to `size`, centre crop to a
// size x size square); float [3, size, size] in [-1, 1]. For samples and tools.
torch::Tensor load_centered(const std::string& path, int64_t size);

// ---------------------------------------------------------------------------
// Whole images and colour (for inference: `atelier stylize`). Images are float
// [3, H, W] RGB in [-1, 1], as everywhere in atelier.

// Decodes `path` at its own aspect ratio, no crop: shorter side scaled to
// `shorter_side`, or the original size when it is 0. Throws DataError naming
// the file.
torch::Tensor load_image(const std::string& path, int64_t shorter_side = 0);

// Writes an image as 8-bit PNG or JPEG, chosen by the extension of `path`
// (.png .jpg .jpeg, any case); values are clamped to [-1, 1] first. Throws
// DataError naming the path when the extension, the tensor or the write is bad.
void save_image(const std::string& path, const torch::Tensor& image);

// Colour preservation by luminance-only transfer (Gatys et al. 2016): the Y
// channel of `stylised` with the Cr and Cb channels of `content` (YCrCb,
// BT.601), back to RGB and clamped to [-1, 1]. Both images have the same size.
torch::Tensor transfer_luminance(const torch::Tensor& stylised, const torch::Tensor& content);

// Histogram matching: each channel of `image` quantised to 256 levels and
// mapped through its CDF onto the inverse CDF of the same channel of
// `reference` (sizes may differ). The result takes only the 256 levels
// k / 127.5 - 1, like an 8-bit image.
torch::Tensor match_histogram(const torch::Tensor& image, const torch::Tensor& reference);

// Position in the sample stream: the next global sample to consume is
// number `index` of epoch `epoch`. An epoch is one pass over the content images.
struct Cursor {
  int64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const Cursor& other) const {
    return epoch == other.epoch && index == other.index;
  }
};

// Global sample number of a cursor (epoch * content images + index), and back.
int64_t sample_at(const Cursor& cursor, int64_t content_count);
Cursor cursor_at(int64_t sample, int64_t content_count);

// One training batch: `content` and `style` are float [B, 3, S, S] in [-1, 1].
struct ContentStyleBatch {
  torch::Tensor content;
  torch::Tensor style;
  Cursor start;  // cursor of the first global sample of the global batch this batch is a slice of
  int64_t first_sample = 0;  // global sample number of this batch's row 0 (rows are consecutive samples)
};

struct LoaderOptions {
  std::vector<std::string> content;  // image files (see list_images)
  std::vector<std::string> style;    // image files (see list_images)
  AugmentOptions augment;
  int64_t batch_size = 4;  // per rank
  int64_t workers = 2;     // decode threads
  int64_t prefetch = 4;    // batches decoded ahead of the consumer
  uint64_t seed = 0;
  int64_t rank = 0;        // this rank takes samples [rank*B, (rank+1)*B) of every global batch
  int64_t world_size = 1;  // global batch = batch_size * world_size
  // Batches in page-locked (pinned) host memory, as PyTorch's DataLoader
  // pin_memory: a GPU copies them with non-blocking transfers. Needs a
  // LibTorch with CUDA and a visible GPU; DataError otherwise.
  bool pin_memory = false;
};

// Where the trainer's batches come from: the in-process PrefetchLoader or the
// loader service's ServiceLoader. Both yield the same batches for the same
// options and start cursor.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // The next batch; blocks until it is ready. Throws DataError when it cannot be had.
  virtual ContentStyleBatch next() = 0;
  // The cursor after the last batch next() returned (where a resume starts).
  virtual Cursor cursor() const = 0;
  // Distinct images that failed to decode so far.
  virtual int64_t skipped_files() const = 0;
  // Seconds next() spent waiting since construction.
  virtual double wait_seconds() const = 0;
};

// A BatchSource whose batches are already on a CUDA `device`: a thread takes
// the next batch from `host` and copies it to the GPU on a copy stream of its
// own while the current step computes (one batch ahead), as PyTorch's CUDA
// data prefetchers do; the copy is complete before next() hands it out.
// Batches, cursors and skipped files are `host`'s, as of the batch next()
// returned last; wait_seconds() is the time next() waited for a copied
// batch. Pinned host batches (LoaderOptions::pin_memory) make the copy
// asynchronous. Throws DataError for a CPU device or where this build has no
// CUDA runtime (see device_copies_built); next() rethrows `host`'s errors.
class DeviceBatches : public BatchSource {
 public:
  DeviceBatches(std::unique_ptr<BatchSource> host, torch::Device device);
  ~DeviceBatches() override;
  DeviceBatches(const DeviceBatches&) = delete;
  DeviceBatches& operator=(const DeviceBatches&) = delete;

  ContentStyleBatch next() override;
  Cursor cursor() const override;
  int64_t skipped_files() const override;
  double wait_seconds() const override;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Whether this build has the CUDA runtime that DeviceBatches copies with.
bool device_copies_built();

// Streams ContentStyleBatch from a pool of worker threads, `prefetch` batches
// ahead. Sample order: content follows a permutation of the content images
// drawn from (seed, epoch); style follows its own permutations, independent
// of content; augmentation randomness is drawn per sample from (seed, sample).
// A file that fails to decode is replaced by the next sample of the same
// order, warned about once and counted. Deterministic for (options, start).
class PrefetchLoader : public BatchSource {
 public:
  PrefetchLoader(LoaderOptions options, Cursor start = {});
  ~PrefetchLoader() override;
  PrefetchLoader(const PrefetchLoader&) = delete;
  PrefetchLoader& operator=(const PrefetchLoader&) = delete;

  // The next batch; blocks until it is decoded. Rethrows a worker's error.
  ContentStyleBatch next() override;
  Cursor cursor() const override;
  // Distinct files that failed to decode so far.
  int64_t skipped_files() const override;
  // Seconds next() spent waiting for workers since construction.
  double wait_seconds() const override;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// ---------------------------------------------------------------------------
// Shards: immutable files of checksummed image records plus an index
// (docs/loader-protocol.md describes the bytes). Records keep list_images
// order, so a shard set samples exactly like the folder it was made from.

struct ShardOptions {
  std::string input;                     // folder of images (list_images rules)
  std::string output;                    // folder for shard-NNNNN.bin and index.json
  int64_t shard_bytes = int64_t{256} << 20;  // a new shard starts past this size
};

struct ShardReport {
  int64_t records = 0;              // images packed
  int64_t shards = 0;               // shard files written (or already there)
  std::vector<std::string> corrupt;  // inputs left out, each "path: reason"
  bool unchanged = false;            // the output already matched the input: nothing written
};

// Packs the images under options.input into shards. Every image is decoded
// once to check it; one that does not decode is reported in `corrupt` and
// left out. Re-running on an unchanged input (same paths, sizes and
// modification times) writes nothing. Files appear by rename only when
// complete. Throws DataError naming the folder or file on I/O errors.
ShardReport write_shards(const ShardOptions& options);

// One record of a shard set, as its index describes it.
struct ShardRecord {
  std::string key;      // path relative to the sharded folder
  std::string shard;    // shard file name inside the shard folder
  int64_t offset = 0;   // of the record header in the shard file
  int64_t length = 0;   // image bytes
  uint32_t crc32c = 0;  // CRC-32C of the image bytes
  int64_t width = 0;    // pixels, measured when sharding
  int64_t height = 0;
  bool jpeg = false;    // the bytes are a JPEG (decoded at a reduced scale for training)
};

// Reads a shard folder. Opening checks the index against the files (magic,
// version, every offset and length inside its file, under the caps) and
// throws DataError naming the file on any mismatch. Thread-safe.
class ShardReader {
 public:
  explicit ShardReader(const std::string& folder);
  int64_t size() const { return static_cast<int64_t>(records_.size()); }
  const ShardRecord& record(int64_t index) const { return records_.at(static_cast<size_t>(index)); }
  // The image bytes of record `index`. A record whose header disagrees with
  // the index or whose bytes fail their checksum yields false and `why`.
  bool read(int64_t index, std::vector<unsigned char>& bytes, std::string& why) const;
  // CRC-32C over every key and checksum: servers of the same shards agree on it.
  uint32_t fingerprint() const { return fingerprint_; }
  const std::string& folder() const { return folder_; }

 private:
  std::string folder_;
  std::vector<ShardRecord> records_;
  uint32_t fingerprint_ = 0;
};

// ---------------------------------------------------------------------------
// Loader service: `atelier serve-data` runs a LoaderServer; each training rank
// reads through a ServiceLoader connected to every server.

// The job token from a file (trailing whitespace dropped). Throws DataError
// naming the file when it is missing or empty.
std::string read_token_file(const std::string& path);

struct ServerOptions {
  std::string content;          // shard folder of content images
  std::string style;            // shard folder of style images
  std::string host = "0.0.0.0";  // address to listen on
  int port = 0;                 // 0: an ephemeral port (see LoaderServer::port)
  std::string token;            // the job token clients must prove they hold
  int64_t workers = 4;          // decode/augment threads
  int64_t io_threads = 1;       // threads running the Asio io_context
  int64_t queue_batches = 4;    // per client: requests accepted but not yet sent
  // A client must authenticate within this many seconds of connecting, and
  // finish every message within it of the message's first byte; a stalled
  // connection is closed with an Error naming the stall. Waiting between
  // messages is not limited (a trainer may pause to checkpoint or evaluate).
  double frame_timeout_s = 30;
};

// Counters of a running server, for logs and tests.
struct ServerStats {
  int64_t connections = 0;          // accepted so far
  int64_t refused = 0;              // hellos with a wrong token
  int64_t oversize = 0;             // messages refused for their length
  int64_t malformed = 0;            // other protocol violations (magic, version, type, order, payload)
  int64_t stalled = 0;              // connections closed for not finishing a handshake or message in time
  int64_t batches_sent = 0;         // batches fully written
  int64_t queued_batches = 0;       // requests accepted and not yet sent, all clients
  int64_t peak_client_queue = 0;    // most requests one client ever had queued
  int64_t skipped_records = 0;      // records that failed their checksum or decode
};

// Serves decoded, augmented batches from two shard folders over TCP: one
// io_context run by `io_threads`, decoding on a pool of `workers`, at most
// `queue_batches` requests per client in flight (the server stops reading
// from a client that does not read its batches). Starts listening in the
// constructor; stop() or the destructor closes every connection and joins
// every thread.
class LoaderServer {
 public:
  explicit LoaderServer(ServerOptions options);
  ~LoaderServer();
  LoaderServer(const LoaderServer&) = delete;
  LoaderServer& operator=(const LoaderServer&) = delete;

  int port() const;          // the port actually bound
  void stop();               // idempotent
  ServerStats stats() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

struct ServiceOptions {
  std::vector<std::string> servers;  // "host:port" of every server, same shards
  std::string token;                 // the job token (never sent; see the protocol)
  AugmentOptions augment;
  int64_t batch_size = 4;   // per rank
  int64_t prefetch = 4;     // batches requested ahead of the consumer
  uint64_t seed = 0;
  int64_t rank = 0;
  int64_t world_size = 1;
  double timeout_s = 60;    // a server silent this long counts as dead
  bool pin_memory = false;  // batches in pinned host memory (see LoaderOptions)
};

// A BatchSource that streams this rank's batches from loader servers: it
// connects to all of them (authenticating each), spreads the next `prefetch`
// batches over them, hands batches out in order, and when a server fails
// re-requests its missing batches from the others, so no sample is lost or
// repeated. The batches equal PrefetchLoader's for the same options and
// folder, bit for bit.
// Throws DataError naming the servers when none can be used.
class ServiceLoader : public BatchSource {
 public:
  ServiceLoader(ServiceOptions options, Cursor start = {});
  ~ServiceLoader() override;
  ServiceLoader(const ServiceLoader&) = delete;
  ServiceLoader& operator=(const ServiceLoader&) = delete;

  ContentStyleBatch next() override;
  Cursor cursor() const override;
  // Most records any server reported skipped.
  int64_t skipped_files() const override;
  double wait_seconds() const override;
  // Servers still connected.
  int64_t live_servers() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace atelier::data
