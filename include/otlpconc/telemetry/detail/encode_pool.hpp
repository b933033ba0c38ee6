// otlpconc/telemetry/detail/encode_pool.hpp: the encoding pool an exporter owns (json_lines_file_exporter,
// otlp_http_exporter): the encode_threads option checked and resolved in one place.
#pragma once

#include "otlpconc/work_stealing_pool.hpp"

#include <algorithm>
#include <cstddef>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

namespace otlpconc::telemetry::detail {

// encode_threads: -1 automatic (half the hardware threads, at most 4, none on a single CPU), 0 no
// pool (encode on the export thread), 1..64 that many. Anything else throws std::invalid_argument
// naming `options_name`. Returns nullptr for no pool.
inline std::unique_ptr<work_stealing_pool> make_encode_pool(int encode_threads, const char* options_name) {
  if (encode_threads < -1 || encode_threads > 64)
    throw std::invalid_argument(std::string(options_name) + ": encode_threads must be -1 (automatic) or 0 to 64, got " +
                                std::to_string(encode_threads));
  int threads = encode_threads;
  if (threads == -1) {
    const unsigned hw = std::thread::hardware_concurrency();
    threads = hw <= 1 ? 0 : static_cast<int>(std::min(4u, std::max(1u, hw / 2)));
  }
  if (threads == 0)
    return nullptr;
  // Chunk exceptions reach the encoder through task_group::wait(); the handler only sees one nobody
  // waited for (a chunk that threw while spawning the next failed), which is dropped.
  return std::make_unique<work_stealing_pool>(static_cast<std::size_t>(threads), [](std::exception_ptr) {});
}

} // namespace otlpconc::telemetry::detail
