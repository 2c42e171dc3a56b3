// blendfuse_render — PNG files through libpng's simplified API (libpng ≥ 1.6).
#include <png.h>

#include <cstring>

#include "blendfuse/core/error.hpp"
#include "blendfuse/io/file.hpp"
#include "render.hpp"

namespace blendfuse::render {

void write_png(const std::string& path, const Image& img) {
  if (img.empty()) throw IoError(path, "cannot write an empty image");
  png_image pi;
  std::memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  pi.width = static_cast<png_uint_32>(img.width());
  pi.height = static_cast<png_uint_32>(img.height());
  pi.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&pi, nullptr, &size, 0, img.data(), 0, nullptr))
    throw IoError(path, std::string("libpng cannot encode the image: ") + pi.message);
  std::vector<std::uint8_t> buf(size);
  if (!png_image_write_to_memory(&pi, buf.data(), &size, 0, img.data(), 0, nullptr))
    throw IoError(path, std::string("libpng cannot encode the image: ") + pi.message);
  buf.resize(size);
  io::write_file_atomic(path, [&](std::ostream& os) {
    os.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
  });
}

Image read_png(const std::string& path) {
  const std::vector<std::uint8_t> bytes = io::read_file_bytes(path);
  png_image pi;
  std::memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&pi, bytes.data(), bytes.size()))
    throw IoError(path, std::string("not a readable PNG file (libpng: ") + pi.message + ")");
  pi.format = PNG_FORMAT_RGB;
  if (pi.width == 0 || pi.height == 0 || pi.width > 1u << 15 || pi.height > 1u << 15) {
    png_image_free(&pi);
    throw IoError(path, "unsupported PNG size " + std::to_string(pi.width) + "x" + std::to_string(pi.height));
  }
  Image img(static_cast<int>(pi.width), static_cast<int>(pi.height));
  if (!png_image_finish_read(&pi, nullptr, img.data(), 0, nullptr))
    throw IoError(path, std::string("corrupt PNG file (libpng: ") + pi.message + ")");
  return img;
}

}  // namespace blendfuse::render
