// otlpconc/telemetry/json_lines_file_exporter.hpp: exports span batches to a file as OTLP JSON
// Lines, the format of the OpenTelemetry Collector's otlpjsonfile receiver.
//
// What: each export appends one line: a TracesData JSON object (otlp_json.hpp) and '\n'. Large
//   batches are encoded on a work_stealing_pool owned by the exporter (options.encode_threads).
// When to use: the default sink that needs no server; tests that read spans back; feeding a
//   Collector through its file receiver.
// Guarantees:
//   - A line is written with write(2) on an O_APPEND descriptor; an error (disk full, I/O error)
//     fails that export with the errno's message, and a partly written line is cut off again
//     (ftruncate) where the file allows it, so the file stays one valid JSON object per line.
//   - Never throws from export_spans (a throwing encoder is a failed export); the constructor throws
//     std::system_error naming the path when the file cannot be opened, std::invalid_argument for
//     bad options.
//   - With options.sync_on_flush, force_flush and shutdown call fsync (the processor's shutdown
//     includes a force_flush, as OpenTelemetry requires, and the exporter's own shutdown syncs
//     too, for direct users): what was exported is on disk when they return true. shutdown closes
//     the file, and later exports fail ("exporter is shut down").
#pragma once

#include "otlpconc/telemetry/detail/encode_pool.hpp"
#include "otlpconc/telemetry/exporter.hpp"
#include "otlpconc/telemetry/otlp_json.hpp"
#include "otlpconc/work_stealing_pool.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace otlpconc::telemetry {

struct json_lines_file_exporter_options {
  bool truncate = false; // start with an empty file (default: append to what is there)
  // Threads of the encoding pool; the export thread helps them. -1: automatic (half the hardware
  // threads, at most 4, none on a single CPU); 0: encode on the export thread only.
  int encode_threads = -1;
  bool sync_on_flush = false; // force_flush calls fsync
};

class json_lines_file_exporter final : public span_exporter {
 public:
  explicit json_lines_file_exporter(std::string path, json_lines_file_exporter_options options = {})
      : path_(std::move(path)), options_(options) {
    // Checked before the file is opened or created.
    pool_ = detail::make_encode_pool(options_.encode_threads, "json_lines_file_exporter_options");
    int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;
    if (options_.truncate)
      flags |= O_TRUNC;
    fd_ = ::open(path_.c_str(), flags, 0644);
    if (fd_ < 0)
      throw std::system_error(errno, std::generic_category(), "json_lines_file_exporter: cannot open '" + path_ + "'");
    encoder_ = otlp_json_encoder(pool_.get());
  }
  ~json_lines_file_exporter() override {
    if (fd_ >= 0)
      ::close(fd_);
  }
  json_lines_file_exporter(const json_lines_file_exporter&) = delete;
  json_lines_file_exporter& operator=(const json_lines_file_exporter&) = delete;

  export_result export_spans(const span_batch_view& batch, clock::time_point) override {
    std::lock_guard lock(mutex_); // exports are serialized by the processor; this guards direct use
    if (fd_ < 0)
      return export_result::failure("json_lines_file_exporter: exporter is shut down");
    line_.clear();
    try {
      encoder_.encode(batch, line_);
      line_.push_back('\n');
    } catch (const std::exception& e) {
      return export_result::failure(std::string("json_lines_file_exporter: encoding failed: ") + e.what());
    }
    const off_t before = ::lseek(fd_, 0, SEEK_END);
    std::size_t written = 0;
    while (written < line_.size()) {
      const ssize_t n = ::write(fd_, line_.data() + written, line_.size() - written);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        const int error = n < 0 ? errno : EIO;
        if (written != 0 && before >= 0)
          (void)!::ftruncate(fd_, before); // keep one valid object per line (regular files)
        return export_result::failure("json_lines_file_exporter: write to '" + path_ +
                                      "' failed: " + std::strerror(error));
      }
      written += static_cast<std::size_t>(n);
    }
    bytes_written_ += written;
    return {};
  }

  bool force_flush(clock::time_point) override {
    std::lock_guard lock(mutex_);
    if (fd_ < 0)
      return false;
    return !options_.sync_on_flush || sync();
  }

  void shutdown(clock::time_point) override {
    std::lock_guard lock(mutex_);
    if (fd_ >= 0) {
      if (options_.sync_on_flush)
        (void)sync(); // a failure has nothing to report to: the exports already succeeded
      ::close(fd_);
      fd_ = -1;
    }
  }

  // fsync calls made (sync_on_flush), for tests.
  std::uint64_t syncs() const {
    std::lock_guard lock(mutex_);
    return syncs_;
  }

  const std::string& path() const noexcept { return path_; }
  std::size_t encode_threads() const noexcept { return pool_ ? pool_->size() : 0; }
  std::uint64_t bytes_written() const {
    std::lock_guard lock(mutex_);
    return bytes_written_;
  }

 private:
  std::string path_;
  json_lines_file_exporter_options options_;
  mutable std::mutex mutex_;
  int fd_ = -1;
  std::unique_ptr<work_stealing_pool> pool_;
  otlp_json_encoder encoder_;
  std::string line_;
  std::uint64_t bytes_written_ = 0;
  std::uint64_t syncs_ = 0;

  bool sync() { // mutex_ held
    ++syncs_;
    return ::fsync(fd_) == 0;
  }
};

} // namespace otlpconc::telemetry
