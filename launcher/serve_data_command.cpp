// `atelier serve-data --content DIR --style DIR --port P --token-file F
// --workers N`: serve decoded, augmented batches from shards to training
// ranks until SIGINT or SIGTERM, then shut down cleanly.
#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <iostream>
#include <memory>

#include "data/data.h"
#include "launcher/commands.h"

namespace atelier::launcher {
namespace {

struct ServeArgs {
  std::string content;
  std::string style;
  std::string host = "0.0.0.0";
  int port = 7000;
  std::string token_file;
  int64_t workers = 4;
  int64_t queue = 4;
  double frame_timeout = 30;
};

int run_serve(const ServeArgs& args) {
  data::ServerOptions options;
  options.content = args.content;
  options.style = args.style;
  options.host = args.host;
  options.port = args.port;
  options.token = data::read_token_file(args.token_file);
  options.workers = args.workers;
  options.queue_batches = args.queue;
  options.frame_timeout_s = args.frame_timeout;
  boost::asio::io_context signals_io;
  boost::asio::signal_set signals(signals_io, SIGINT, SIGTERM);
  data::LoaderServer server(options);
  // The line scripts and tests wait for; with --port 0 it carries the real port.
  std::cout << "serving " << args.content << " and " << args.style << " on " << args.host << ":" << server.port()
            << std::endl;
  int received = 0;
  signals.async_wait([&](const boost::system::error_code&, int signal) { received = signal; });
  signals_io.run();
  spdlog::info("signal {}: stopping the loader server", received);
  const auto stats = server.stats();
  server.stop();
  spdlog::info("served {} batches to {} connection(s); {} refused, {} oversize, {} records skipped",
               stats.batches_sent, stats.connections, stats.refused, stats.oversize, stats.skipped_records);
  return 0;
}

}  // namespace

void add_serve_data_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve-data", "Serve decoded, augmented batches from shards to training ranks");
  cmd->add_option("--content", args->content, "Shard folder of content images (atelier shard --output)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--style", args->style, "Shard folder of style images")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("--host", args->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", args->port, "TCP port (0: any free port, printed on start)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--token-file", args->token_file, "File holding the job token (the same as data.token_file)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--workers", args->workers, "Decode/augment threads")
      ->check(CLI::Range(int64_t{1}, int64_t{256}))
      ->capture_default_str();
  cmd->add_option("--queue", args->queue, "Requests in flight per client (bounds memory per client)")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}))
      ->capture_default_str();
  cmd->add_option("--frame-timeout", args->frame_timeout,
                  "Seconds a client has to authenticate after connecting, and to finish each message it starts; "
                  "a stalled connection is closed with an error")
      ->check(CLI::Range(0.001, 3600.0))
      ->capture_default_str();
  cmd->footer("Runs until SIGINT or SIGTERM. The token never crosses the network: clients prove they hold it\n"
              "with an HMAC-SHA256 of a per-connection nonce.");
  cmd->callback([args, &exit_code] { exit_code = run_serve(*args); });
}

}  // namespace atelier::launcher
