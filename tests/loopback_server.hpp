// Test helper: runs tests/e2e/otlp_server.py (a scripted OTLP/HTTP receiver on 127.0.0.1) as a
// child process for the lifetime of the object, and reads back what it logged.
#pragma once

#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <spawn.h>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace otlpconc_test {

class loopback_server {
 public:
  // responses: the server's script (see otlp_server.py), answered in order, then 200. options:
  // otlp_server.py's --tls-* options (https).
  explicit loopback_server(std::initializer_list<std::string> responses, std::vector<std::string> options = {})
      : tls_(!options.empty()) {
    static int instance = 0;
    const std::string stem = "/tmp/otlpconc-server-" + std::to_string(::getpid()) + "-" + std::to_string(++instance);
    port_file_ = stem + ".port";
    log_file_ = stem + ".log";
    std::remove(port_file_.c_str());
    std::remove(log_file_.c_str());
    std::vector<std::string> args = {OTLPCONC_TEST_PYTHON, OTLPCONC_TEST_SERVER_SCRIPT, port_file_, log_file_};
    args.insert(args.end(), options.begin(), options.end());
    args.insert(args.end(), responses.begin(), responses.end());
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0)
      throw std::runtime_error("cannot start " + std::string(OTLPCONC_TEST_PYTHON));
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < give_up) {
      std::ifstream in(port_file_);
      if (in >> port_)
        return;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("otlp_server.py exited before listening");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    stop();
    throw std::runtime_error("otlp_server.py did not start listening within 30 s");
  }
  ~loopback_server() {
    stop();
    std::remove(port_file_.c_str());
    std::remove(log_file_.c_str());
  }
  loopback_server(const loopback_server&) = delete;
  loopback_server& operator=(const loopback_server&) = delete;

  std::string url(const std::string& path = "/v1/traces") const {
    return (tls_ ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(port_) + path;
  }

  // One JSON line per request the server received, in order.
  std::vector<std::string> requests() const {
    std::vector<std::string> lines;
    std::ifstream in(log_file_);
    for (std::string line; std::getline(in, line);)
      lines.push_back(line);
    return lines;
  }

 private:
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

  bool tls_ = false;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string port_file_, log_file_;
};

} // namespace otlpconc_test
