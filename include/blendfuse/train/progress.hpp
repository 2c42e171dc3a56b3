// blendfuse — a progress bar with rate and ETA for long work (training, conversion, export).
// Drawn on stderr only when stderr is a terminal and CI is not set; otherwise silent, so logs
// and CI output stay clean.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace blendfuse::train {

inline bool interactive_terminal() {
  const char* ci = std::getenv("CI");
  if (ci && *ci && std::string(ci) != "false" && std::string(ci) != "0") return false;
  return ::isatty(STDERR_FILENO) == 1;
}

class Progress {
 public:
  Progress(std::string label, long total, bool enabled = interactive_terminal())
      : label_(std::move(label)), total_(total), enabled_(enabled), start_(Clock::now()), last_(start_) {}

  ~Progress() { finish(); }

  /// Reports that `done` of `total` units are complete; `info` is shown after the bar.
  void update(long done, const std::string& info = "") {
    done_ = done;
    if (!enabled_) return;
    const auto now = Clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    const double el = seconds(now - start_);
    const double frac = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
    const double eta = frac > 0 ? el * (1 - frac) / frac : 0;
    const int width = 28, fill = static_cast<int>(frac * width);
    std::string bar(static_cast<std::size_t>(fill), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %3.0f%% %ld/%ld  %s elapsed, ETA %s  %s\033[K", label_.c_str(),
                 bar.c_str(), frac * 100, done, total_, fmt(el).c_str(), fmt(eta).c_str(), info.c_str());
    std::fflush(stderr);
    drawn_ = true;
  }

  void finish() {
    if (enabled_ && drawn_) {
      std::fprintf(stderr, "\n");
      drawn_ = false;
    }
  }

  double elapsed_seconds() const { return seconds(Clock::now() - start_); }

  using TimePoint = std::chrono::steady_clock::time_point;
  static TimePoint now() { return std::chrono::steady_clock::now(); }
  static double seconds_since(TimePoint t) { return seconds(now() - t); }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
  static std::string fmt(double s) {
    char buf[32];
    const long t = static_cast<long>(s + 0.5);
    if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
    return buf;
  }

  std::string label_;
  long total_ = 0, done_ = 0;
  bool enabled_ = false, drawn_ = false;
  Clock::time_point start_, last_;
};

}  // namespace blendfuse::train
