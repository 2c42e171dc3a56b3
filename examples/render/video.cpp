// blendfuse_render — MP4 output through an `ffmpeg` subprocess fed raw RGB24 frames on a pipe.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "blendfuse/core/error.hpp"
#include "render.hpp"

namespace blendfuse::render {

std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  if (!path) return "";
  std::string p(path);
  std::size_t start = 0;
  while (start <= p.size()) {
    std::size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (dir.empty()) dir = ".";
    const std::string cand = dir + "/" + name;
    struct stat st;
    if (::stat(cand.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return "";
}

namespace {
std::string describe_status(int status) {
  if (WIFEXITED(status)) {
    const int code = WEXITSTATUS(status);
    return code == 127 ? "could not be started (exit status 127)" : "exit status " + std::to_string(code);
  }
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::string fmt_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// SIGPIPE would kill us when ffmpeg exits early; write() then fails with EPIPE instead.
struct IgnoreSigpipe {
  struct sigaction old {};
  IgnoreSigpipe() {
    struct sigaction sa {};
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGPIPE, &sa, &old);
  }
  ~IgnoreSigpipe() { ::sigaction(SIGPIPE, &old, nullptr); }
};
}  // namespace

VideoWriter::VideoWriter(std::string out_path, int width, int height, double fps, std::string audio_path,
                         std::string ffmpeg)
    : out_(std::move(out_path)), w_(width), h_(height) {
  namespace fs = std::filesystem;
  BF_CHECK(width > 0 && height > 0 && width % 2 == 0 && height % 2 == 0, ArgumentError,
           "VideoWriter: frame size ", width, "x", height, " must be positive and even (H.264 4:2:0)");
  BF_CHECK(fps > 0, ArgumentError, "VideoWriter: fps ", fps, " must be positive");
  if (ffmpeg.empty()) ffmpeg = find_program("ffmpeg");
  if (ffmpeg.empty())
    throw IoError(out_, "MP4 output needs the ffmpeg program, which is not on PATH: install it "
                        "(apt-get install ffmpeg), or write a .png contact sheet instead");
  const fs::path target(out_);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw IoError(out_, "output folder does not exist");
  std::random_device rd;
  tmp_ = (dir / (target.filename().string() + ".tmp" + std::to_string(rd() % 1000000u))).string();

  std::vector<std::string> args = {ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                                   "-f", "rawvideo", "-pix_fmt", "rgb24",
                                   "-s", std::to_string(width) + "x" + std::to_string(height),
                                   "-r", fmt_double(fps), "-i", "-"};
  if (!audio_path.empty()) args.insert(args.end(), {"-i", audio_path});
  args.insert(args.end(), {"-map", "0:v:0"});
  if (!audio_path.empty()) args.insert(args.end(), {"-map", "1:a:0"});
  args.insert(args.end(), {"-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"});
  // Audio padded with silence and cut at the video's end: the video always has every frame.
  if (!audio_path.empty()) args.insert(args.end(), {"-c:a", "aac", "-b:a", "128k", "-af", "apad", "-shortest"});
  args.insert(args.end(), {"-movflags", "+faststart", "-f", "mp4", tmp_});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (::pipe(fds) != 0) throw IoError(out_, std::string("cannot create a pipe to ffmpeg: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw IoError(out_, std::string("cannot start ffmpeg: ") + std::strerror(err));
  }
  if (pid == 0) {  // child: stdin = the pipe's read end
    ::dup2(fds[0], STDIN_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[0]);
  ::fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  pid_ = pid;
  fd_ = fds[1];
}

VideoWriter::~VideoWriter() {
  if (!done_) abort();
}

void VideoWriter::abort() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  std::error_code ec;
  if (!tmp_.empty()) std::filesystem::remove(tmp_, ec);
  done_ = true;
}

void VideoWriter::write(const Image& frame) {
  BF_CHECK(!done_, ArgumentError, "VideoWriter::write after finish");
  BF_CHECK(frame.width() == w_ && frame.height() == h_, ArgumentError, "VideoWriter: frame is ", frame.width(), "x",
           frame.height(), ", the video ", w_, "x", h_);
  IgnoreSigpipe guard;
  const std::uint8_t* p = frame.data();
  std::size_t left = frame.bytes();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      int st = 0;
      std::string why = std::strerror(err);
      if (::waitpid(pid_, &st, 0) == pid_) {
        pid_ = -1;
        why = "ffmpeg stopped (" + describe_status(st) + "; its messages, if any, are above)";
      }
      abort();
      throw IoError(out_, "writing video frame " + std::to_string(frames_) + " failed: " + why);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  ++frames_;
}

void VideoWriter::finish() {
  BF_CHECK(!done_, ArgumentError, "VideoWriter::finish called twice");
  if (frames_ == 0) {
    abort();
    throw IoError(out_, "no frames to encode");
  }
  ::close(fd_);
  fd_ = -1;
  int st = 0;
  pid_t r;
  while ((r = ::waitpid(pid_, &st, 0)) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  if (r < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    abort();
    throw IoError(out_, "ffmpeg failed (" + (r < 0 ? std::string("lost") : describe_status(st)) +
                            "; its messages, if any, are above)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp_, out_, ec);
  if (ec) {
    abort();
    throw IoError(out_, "cannot rename the temporary video " + tmp_ + ": " + ec.message());
  }
  done_ = true;
}

}  // namespace blendfuse::render
