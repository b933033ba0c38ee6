// otlpconc/telemetry/detail/compression.hpp: gzip (zlib) and zstd (libzstd) compression of request
// bodies, for the OTLP/HTTP exporter's Content-Encoding. Each codec is there only when otlpconc was
// configured with its library (OTLPCONC_WITH_ZLIB / OTLPCONC_WITH_ZSTD, which define
// OTLPCONC_HAVE_ZLIB / OTLPCONC_HAVE_ZSTD on the otlpconc::otlp_http target).
//
// body_compressor keeps its codec's state (a z_stream, a ZSTD_CCtx) from one body to the next, so a
// body costs no allocation of the codec's tables; one compressor must not be used by two threads at
// once. compress() replaces `out` with the compressed form of `in`, or throws (std::bad_alloc,
// std::length_error for a body over 2 GiB with gzip, std::runtime_error naming the library's error)
// and then leaves `out` empty.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#if defined(OTLPCONC_HAVE_ZLIB) && OTLPCONC_HAVE_ZLIB
#include <zlib.h>
#endif
#if defined(OTLPCONC_HAVE_ZSTD) && OTLPCONC_HAVE_ZSTD
#include <zstd.h>
#endif

namespace otlpconc::telemetry::detail {

enum class body_codec { gzip, zstd };

#if defined(OTLPCONC_HAVE_ZLIB) && OTLPCONC_HAVE_ZLIB
inline constexpr bool have_gzip = true;
#else
inline constexpr bool have_gzip = false;
#endif
#if defined(OTLPCONC_HAVE_ZSTD) && OTLPCONC_HAVE_ZSTD
inline constexpr bool have_zstd = true;
#else
inline constexpr bool have_zstd = false;
#endif

constexpr bool codec_available(body_codec c) noexcept {
  return c == body_codec::gzip ? have_gzip : have_zstd;
}

// How to get a codec that is missing, for error messages.
inline const char* codec_missing_hint(body_codec c) noexcept {
  return c == body_codec::gzip
             ? "gzip needs zlib: configure otlpconc with OTLPCONC_WITH_ZLIB=AUTO or ON (Debian: zlib1g-dev)"
             : "zstd needs libzstd: configure otlpconc with OTLPCONC_WITH_ZSTD=AUTO or ON (Debian: libzstd-dev)";
}

class body_compressor {
 public:
  // level: gzip 1..9, zstd 1..19 (checked by the exporter's options).
  body_compressor(body_codec codec, int level) : codec_(codec), level_(level) {
    if (!codec_available(codec))
      throw std::invalid_argument(codec_missing_hint(codec));
  }
  ~body_compressor() {
#if defined(OTLPCONC_HAVE_ZLIB) && OTLPCONC_HAVE_ZLIB
    if (deflate_ready_)
      (void)deflateEnd(&z_);
#endif
#if defined(OTLPCONC_HAVE_ZSTD) && OTLPCONC_HAVE_ZSTD
    ZSTD_freeCCtx(zstd_);
#endif
  }
  body_compressor(const body_compressor&) = delete;
  body_compressor& operator=(const body_compressor&) = delete;

  body_codec codec() const noexcept {
    return codec_;
  }

  void compress(std::string_view in, std::string& out) {
    try {
      if (codec_ == body_codec::gzip)
        gzip(in, out);
      else
        zstd(in, out);
    } catch (...) {
      out.clear();
      throw;
    }
  }

 private:
  void gzip([[maybe_unused]] std::string_view in, [[maybe_unused]] std::string& out) {
#if defined(OTLPCONC_HAVE_ZLIB) && OTLPCONC_HAVE_ZLIB
    if (in.size() > std::numeric_limits<uInt>::max() / 2)
      throw std::length_error("gzip: a request body over 2 GiB");
    if (!deflate_ready_) {
      // windowBits 15 + 16: a gzip header and trailer around the deflate stream (RFC 1952).
      const int rc = deflateInit2(&z_, level_, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
      if (rc == Z_MEM_ERROR)
        throw std::bad_alloc();
      if (rc != Z_OK)
        throw std::runtime_error(std::string("gzip: deflateInit2 failed: ") + (z_.msg ? z_.msg : "unknown error"));
      deflate_ready_ = true;
    } else if (deflateReset(&z_) != Z_OK) {
      throw std::runtime_error("gzip: deflateReset failed");
    }
    out.resize(deflateBound(&z_, static_cast<uLong>(in.size())));
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data())); // zlib does not write it
    z_.avail_in = static_cast<uInt>(in.size());
    z_.next_out = reinterpret_cast<Bytef*>(out.data());
    z_.avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(&z_, Z_FINISH); // one call: the bound leaves room for the whole stream
    if (rc != Z_STREAM_END)
      throw std::runtime_error("gzip: deflate failed (" + std::to_string(rc) + ")");
    out.resize(out.size() - z_.avail_out);
#else
    throw std::invalid_argument(codec_missing_hint(body_codec::gzip));
#endif
  }

  void zstd([[maybe_unused]] std::string_view in, [[maybe_unused]] std::string& out) {
#if defined(OTLPCONC_HAVE_ZSTD) && OTLPCONC_HAVE_ZSTD
    if (zstd_ == nullptr && (zstd_ = ZSTD_createCCtx()) == nullptr)
      throw std::bad_alloc();
    out.resize(ZSTD_compressBound(in.size()));
    const std::size_t n = ZSTD_compressCCtx(zstd_, out.data(), out.size(), in.data(), in.size(), level_);
    if (ZSTD_isError(n) != 0u)
      throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
    out.resize(n);
#else
    throw std::invalid_argument(codec_missing_hint(body_codec::zstd));
#endif
  }

  body_codec codec_;
  int level_;
#if defined(OTLPCONC_HAVE_ZLIB) && OTLPCONC_HAVE_ZLIB
  z_stream z_{};
  bool deflate_ready_ = false;
#endif
#if defined(OTLPCONC_HAVE_ZSTD) && OTLPCONC_HAVE_ZSTD
  ZSTD_CCtx* zstd_ = nullptr;
#endif
};

} // namespace otlpconc::telemetry::detail
