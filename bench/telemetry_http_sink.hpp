// A minimal OTLP/HTTP receiver on loopback for the export benchmarks: it reads each request (the
// body by its Content-Length), waits a fixed latency on that connection (a distant Collector), and
// answers 200 with "{}", keeping the connection alive. One thread per connection. It counts the
// requests and the spans (the "spanId" keys of each body).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

namespace otlpconc::bench {

class http_sink {
 public:
  explicit http_sink(std::chrono::milliseconds latency) : latency_(latency) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0)
      throw std::runtime_error("http_sink: socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 128) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      throw std::runtime_error("http_sink: bind/listen");
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~http_sink() {
    stop_.store(true, std::memory_order_relaxed); // (H1) a flag; the joins order the rest
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(listen_fd_);
    std::lock_guard lock(mutex_);
    for (auto& c : connections_) {
      ::shutdown(c.fd, SHUT_RDWR);
      c.thread.join();
      ::close(c.fd);
    }
  }
  http_sink(const http_sink&) = delete;
  http_sink& operator=(const http_sink&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1/traces"; }
  // (H2) relaxed: statistics, read after the exporter has shut down.
  std::int64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  std::int64_t spans() const { return spans_.load(std::memory_order_relaxed); }

 private:
  struct connection {
    int fd;
    std::thread thread;
  };

  void accept_loop() {
    while (!stop_.load(std::memory_order_relaxed)) { // (H1)
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0)
        return; // shut down
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard lock(mutex_);
      connections_.push_back({fd, {}});
      connections_.back().thread = std::thread([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    std::string in;
    char buf[1 << 16];
    for (;;) {
      std::size_t head_end;
      while ((head_end = in.find("\r\n\r\n")) == std::string::npos)
        if (!read_more(fd, in, buf, sizeof buf))
          return;
      std::size_t length = 0;
      const std::string_view head(in.data(), head_end);
      for (std::string_view name : {"Content-Length:", "content-length:"})
        if (const std::size_t at = head.find(name); at != std::string_view::npos)
          length = std::stoul(std::string(head.substr(at + name.size(), 20)));
      const std::size_t total = head_end + 4 + length;
      while (in.size() < total)
        if (!read_more(fd, in, buf, sizeof buf))
          return;
      std::int64_t spans = 0;
      const std::string_view body(in.data() + head_end + 4, length);
      for (std::size_t at = body.find("\"spanId\""); at != std::string_view::npos; at = body.find("\"spanId\"", at + 8))
        ++spans;
      in.erase(0, total);
      std::this_thread::sleep_for(latency_);
      spans_.fetch_add(spans, std::memory_order_relaxed); // (H2)
      requests_.fetch_add(1, std::memory_order_relaxed);  // (H2)
      static constexpr std::string_view reply =
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
      if (::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(reply.size()))
        return;
    }
  }

  static bool read_more(int fd, std::string& in, char* buf, std::size_t size) {
    const ssize_t n = ::recv(fd, buf, size, 0);
    if (n <= 0)
      return false;
    in.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  const std::chrono::milliseconds latency_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::int64_t> requests_{0}, spans_{0};
  std::mutex mutex_;
  std::list<connection> connections_;
  std::thread acceptor_;
};

} // namespace otlpconc::bench
