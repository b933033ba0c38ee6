// otlpconc/telemetry/detail/otlp_response.hpp: reading an OTLP/HTTP response body
// (ExportTraceServiceResponse: {"partialSuccess":{"rejectedSpans":"3","errorMessage":"..."}} in
// JSON, or its protobuf form; an error's google.rpc.Status in protobuf) and the Retry-After header.
// A small strict JSON reader: it walks the whole document, so text inside strings (an errorMessage
// that mentions "rejectedSpans", say) is never mistaken for a key. The protobuf reader walks every
// field, skipping the unknown ones by their wire type, and rejects a truncated or malformed body.
#pragma once

#include "otlpconc/telemetry/detail/text.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>

namespace otlpconc::telemetry::detail {

struct otlp_partial_success {
  std::uint64_t rejected = 0;
  std::string message;
};

class otlp_json_reader {
 public:
  explicit otlp_json_reader(std::string_view text) noexcept : s_(text) {}

  // nullopt: not a JSON object, or malformed. An object without partialSuccess: rejected 0.
  std::optional<otlp_partial_success> partial_success() {
    otlp_partial_success out;
    ws();
    bool ok = object([&](std::string_view key) {
      if (key != "partialSuccess")
        return value();
      return object([&](std::string_view inner) {
        if (inner == "rejectedSpans")
          return int64_value(out.rejected);
        if (inner == "errorMessage") {
          ws();
          return string(&out.message);
        }
        return value();
      });
    });
    ws();
    if (!ok || i_ != s_.size())
      return std::nullopt;
    return out;
  }

 private:
  void ws() noexcept {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool eat(char c) noexcept {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  template <class OnMember>
  bool object(OnMember&& on_member) {
    if (++depth_ > 64 || !eat('{'))
      return false;
    if (eat('}'))
      return --depth_, true;
    do {
      std::string key;
      ws();
      if (!string(&key) || !eat(':') || !on_member(std::string_view(key)))
        return false;
    } while (eat(','));
    return eat('}') && (--depth_, true);
  }
  bool array() {
    if (++depth_ > 64 || !eat('['))
      return false;
    if (eat(']'))
      return --depth_, true;
    do {
      if (!value())
        return false;
    } while (eat(','));
    return eat(']') && (--depth_, true);
  }
  bool value() {
    ws();
    if (i_ >= s_.size())
      return false;
    switch (s_[i_]) {
    case '{':
      return object([&](std::string_view) { return value(); });
    case '[':
      return array();
    case '"':
      return string(nullptr);
    default:
      break;
    }
    for (std::string_view word : {"true", "false", "null"})
      if (s_.substr(i_, word.size()) == word) {
        i_ += word.size();
        return true;
      }
    return number(nullptr);
  }
  // OTLP JSON writes int64 as a decimal string; some receivers write a number. Both are accepted.
  bool int64_value(std::uint64_t& out) {
    ws();
    if (i_ < s_.size() && s_[i_] == '"') {
      std::string text;
      if (!string(&text))
        return false;
      return digits(text, out);
    }
    std::string text;
    return number(&text) && digits(text, out);
  }
  static bool digits(std::string_view text, std::uint64_t& out) noexcept {
    if (text.empty() || text.size() > 19)
      return false;
    out = 0;
    for (char c : text) {
      if (c < '0' || c > '9')
        return false;
      out = out * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return true;
  }
  bool number(std::string* out) {
    const std::size_t start = i_;
    while (i_ < s_.size() && (std::string_view("+-.eE0123456789").find(s_[i_]) != std::string_view::npos))
      ++i_;
    if (i_ == start)
      return false;
    if (out != nullptr)
      out->assign(s_.substr(start, i_ - start));
    return true;
  }
  // A JSON string at i_ (after whitespace). \uXXXX escapes become UTF-8 (a lone surrogate: U+FFFD).
  bool string(std::string* out) {
    if (i_ >= s_.size() || s_[i_] != '"')
      return false;
    ++i_;
    while (i_ < s_.size()) {
      const char c = s_[i_++];
      if (c == '"')
        return true;
      if (static_cast<unsigned char>(c) < 0x20)
        return false;
      if (c != '\\') {
        if (out != nullptr)
          out->push_back(c);
        continue;
      }
      if (i_ >= s_.size())
        return false;
      const char e = s_[i_++];
      char plain = 0;
      switch (e) {
      case '"':
        plain = '"';
        break;
      case '\\':
        plain = '\\';
        break;
      case '/':
        plain = '/';
        break;
      case 'b':
        plain = '\b';
        break;
      case 'f':
        plain = '\f';
        break;
      case 'n':
        plain = '\n';
        break;
      case 'r':
        plain = '\r';
        break;
      case 't':
        plain = '\t';
        break;
      case 'u': {
        std::uint32_t cp = 0;
        if (!hex4(cp))
          return false;
        if (cp >= 0xD800 && cp <= 0xDBFF && s_.substr(i_, 2) == "\\u") {
          const std::size_t save = i_;
          i_ += 2;
          std::uint32_t low = 0;
          if (hex4(low) && low >= 0xDC00 && low <= 0xDFFF)
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          else
            i_ = save;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF)
          cp = 0xFFFD;
        if (out != nullptr)
          append_utf8(*out, cp);
        continue;
      }
      default:
        return false;
      }
      if (out != nullptr)
        out->push_back(plain);
    }
    return false;
  }
  bool hex4(std::uint32_t& cp) noexcept {
    if (s_.size() - i_ < 4)
      return false;
    for (int k = 0; k < 4; ++k) {
      const int d = hex_value(s_[i_++]);
      if (d < 0)
        return false;
      cp = cp * 16 + static_cast<std::uint32_t>(d);
    }
    return true;
  }
  static void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
  int depth_ = 0;
};

// Reads protobuf messages field by field (wire types 0, 1, 2 and 5; groups are malformed here).
class protobuf_reader {
 public:
  explicit protobuf_reader(std::string_view bytes) noexcept : s_(bytes) {}
  bool done() const noexcept { return i_ == s_.size(); }

  // The next field's number and wire type; false at a malformed tag.
  bool tag(std::uint32_t& field, std::uint32_t& wire) noexcept {
    std::uint64_t t = 0;
    if (!varint(t) || (t >> 3) == 0 || (t >> 3) > 0x1fffffff)
      return false;
    field = static_cast<std::uint32_t>(t >> 3);
    wire = static_cast<std::uint32_t>(t & 7);
    return true;
  }
  bool varint(std::uint64_t& v) noexcept {
    v = 0;
    for (int shift = 0; shift < 64 && i_ < s_.size(); shift += 7) {
      const auto byte = static_cast<unsigned char>(s_[i_++]);
      v |= std::uint64_t{byte & 0x7fu} << shift;
      if ((byte & 0x80) == 0)
        return true;
    }
    return false;
  }
  bool bytes(std::string_view& out) noexcept {
    std::uint64_t n = 0;
    if (!varint(n) || n > s_.size() - i_)
      return false;
    out = s_.substr(i_, static_cast<std::size_t>(n));
    i_ += static_cast<std::size_t>(n);
    return true;
  }
  bool skip(std::uint32_t wire) noexcept {
    std::uint64_t v = 0;
    std::string_view b;
    switch (wire) {
    case 0:
      return varint(v);
    case 1:
      return advance(8);
    case 2:
      return bytes(b);
    case 5:
      return advance(4);
    default:
      return false;
    }
  }

 private:
  bool advance(std::size_t n) noexcept {
    if (n > s_.size() - i_)
      return false;
    i_ += n;
    return true;
  }
  std::string_view s_;
  std::size_t i_ = 0;
};

// ExportTraceServiceResponse in protobuf: partial_success (1) { rejected_spans (1, int64),
// error_message (2) }. nullopt: malformed. No partial_success (an empty body): rejected 0.
inline std::optional<otlp_partial_success> protobuf_partial_success(std::string_view body) {
  otlp_partial_success out;
  protobuf_reader top(body);
  while (!top.done()) {
    std::uint32_t field = 0, wire = 0;
    if (!top.tag(field, wire))
      return std::nullopt;
    if (field != 1 || wire != 2) {
      if (!top.skip(wire))
        return std::nullopt;
      continue;
    }
    std::string_view inner_bytes;
    if (!top.bytes(inner_bytes))
      return std::nullopt;
    protobuf_reader inner(inner_bytes);
    while (!inner.done()) {
      if (!inner.tag(field, wire))
        return std::nullopt;
      std::string_view text;
      std::uint64_t v = 0;
      if (field == 1 && wire == 0) {
        if (!inner.varint(v))
          return std::nullopt;
        out.rejected = static_cast<std::int64_t>(v) < 0 ? 0 : v; // a negative count means none
      } else if (field == 2 && wire == 2) {
        if (!inner.bytes(text))
          return std::nullopt;
        out.message.assign(text);
      } else if (!inner.skip(wire)) {
        return std::nullopt;
      }
    }
  }
  return out;
}

// google.rpc.Status in protobuf (an OTLP/HTTP error body): its message (2), or nullopt when the
// body is malformed or has none.
inline std::optional<std::string> protobuf_status_message(std::string_view body) {
  protobuf_reader r(body);
  std::optional<std::string> message;
  while (!r.done()) {
    std::uint32_t field = 0, wire = 0;
    if (!r.tag(field, wire))
      return std::nullopt;
    std::string_view text;
    if (field == 2 && wire == 2) {
      if (!r.bytes(text))
        return std::nullopt;
      message.emplace(text);
    } else if (!r.skip(wire)) {
      return std::nullopt;
    }
  }
  return message;
}

// Retry-After (RFC 9110 10.2.3): delay-seconds, or an HTTP-date (IMF-fixdate, RFC 850 or asctime
// form) turned into a delay from `now` (a date in the past: zero). nullopt when unparsable.
inline std::optional<std::chrono::seconds> parse_retry_after(std::string_view value, std::time_t now) {
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) // the header line's CRLF
    value.remove_suffix(1);
  value = trim_ows(value);
  if (value.empty())
    return std::nullopt;
  if (value.find_first_not_of("0123456789") == std::string_view::npos) {
    if (value.size() > 9) // more than 31 years: capped (the export deadline comes first anyway)
      return std::chrono::seconds(999'999'999);
    std::int64_t s = 0;
    for (char c : value)
      s = s * 10 + (c - '0');
    return std::chrono::seconds(s);
  }
  static constexpr std::string_view months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  // Tokens: day name, then either "DD Mon YYYY HH:MM:SS GMT", "DD-Mon-YY HH:MM:SS GMT" or
  // "Mon D HH:MM:SS YYYY".
  std::string text(value);
  for (char& c : text)
    if (c == ',' || c == '-')
      c = ' ';
  int day = -1, month = -1, year = -1, hh = -1, mm = -1, ss = -1;
  std::size_t at = 0;
  auto next = [&]() -> std::string_view {
    while (at < text.size() && text[at] == ' ')
      ++at;
    const std::size_t start = at;
    while (at < text.size() && text[at] != ' ')
      ++at;
    return std::string_view(text).substr(start, at - start);
  };
  auto number = [](std::string_view t) {
    if (t.empty() || t.size() > 4 || t.find_first_not_of("0123456789") != std::string_view::npos)
      return -1;
    int v = 0;
    for (char c : t)
      v = v * 10 + (c - '0');
    return v;
  };
  auto time_of_day = [&](std::string_view t) {
    if (t.size() != 8 || t[2] != ':' || t[5] != ':')
      return false;
    hh = number(t.substr(0, 2)), mm = number(t.substr(3, 2)), ss = number(t.substr(6, 2));
    return hh >= 0 && mm >= 0 && ss >= 0;
  };
  auto month_of = [&](std::string_view t) {
    for (int m = 0; m < 12; ++m)
      if (t == months[m])
        return m;
    return -1;
  };
  next(); // day name
  const std::string_view first = next();
  if ((month = month_of(first)) >= 0) { // asctime: Mon D HH:MM:SS YYYY
    day = number(next());
    if (!time_of_day(next()))
      return std::nullopt;
    year = number(next());
  } else {
    day = number(first);
    month = month_of(next());
    year = number(next());
    if (year >= 0 && year < 100) // RFC 850's two-digit year (RFC 9110: within 50 years of now)
      year += year < 70 ? 2000 : 1900;
    if (!time_of_day(next()) || next() != "GMT")
      return std::nullopt;
  }
  if (!next().empty() || day < 1 || day > 31 || month < 0 || year < 1970 || hh > 23 || mm > 59 || ss > 60)
    return std::nullopt;
  // Days from the civil date (proleptic Gregorian), no time zone involved.
  const int y = year - (month < 2 ? 1 : 0);
  const int era = y / 400;
  const int yoe = y - era * 400;
  const int mp = (month + 10) % 12; // March is 0
  const int doy = (153 * mp + 2) / 5 + day - 1;
  const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const std::int64_t days = std::int64_t{era} * 146097 + doe - 719468;
  const std::int64_t when = days * 86400 + hh * 3600 + mm * 60 + ss;
  // Capped like delay-seconds: a date centuries ahead must not overflow a nanosecond clock.
  return std::chrono::seconds(when > now ? std::min<std::int64_t>(when - now, 999'999'999) : 0);
}

} // namespace otlpconc::telemetry::detail
