// blendfuse — writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/), a few small
// valid inputs per target made with the library's own writers. Deterministic: rerunning it
// reproduces the committed files byte for byte (scripts/fuzz.sh --make-corpus).
//   make_corpus OUT_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "blendfuse/io/mesh.hpp"
#include "blendfuse/io/npy.hpp"
#include "blendfuse/io/safetensors.hpp"
#include "blendfuse/io/wav.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/nn/faceformer.hpp"
#include "blendfuse/nn/wav2vec2.hpp"
#include "blendfuse/rig/rig.hpp"
#include "blendfuse/rig/solve.hpp"

namespace fs = std::filesystem;
using namespace blendfuse;

namespace {

fs::path g_out;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_out / target;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
void put(const std::string& target, const std::string& name, const std::vector<std::uint8_t>& b) {
  put(target, name, std::string(b.begin(), b.end()));
}

Tensor<float> ramp(const Shape& s, float scale = 0.01f) {
  Tensor<float> t(s);
  for (Index i = 0; i < t.numel(); ++i) t[i] = scale * static_cast<float>((i * 7) % 13) - 0.05f;
  return t;
}

// A tetrahedron, ~0.1 units across (metres, by the dataset's unit detection).
io::Mesh tetra() {
  io::Mesh m;
  m.vertices = Tensor<float>::from({4, 3}, {0.f, 0.f, 0.f, 0.1f, 0.f, 0.f, 0.f, 0.1f, 0.f, 0.f, 0.f, 0.1f});
  m.faces = Tensor<std::int32_t>::from({4, 3}, {0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3});
  return m;
}

std::string npy_str(const Tensor<float>& t) {
  const auto b = io::serialize_npy(t);
  return std::string(b.begin(), b.end());
}

// libsndfile stamps float WAVs' PEAK chunk with the time of writing; zeroed for reproducible seeds.
std::vector<std::uint8_t> no_timestamp(std::vector<std::uint8_t> b) {
  for (std::size_t i = 12; i + 16 <= b.size(); ++i)
    if (std::memcmp(b.data() + i, "PEAK", 4) == 0) std::memset(b.data() + i + 12, 0, 4);  // id, size, version, time
  return b;
}

std::string archive(const std::vector<std::pair<std::string, std::string>>& files) {
  std::string out;
  for (const auto& [name, content] : files) {
    if (!out.empty()) out += "\n";
    out += "@@@ " + name + "\n" + content;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus OUT_DIR\n");
    return 2;
  }
  g_out = argv[1];

  // ---- safetensors + its header ----
  {
    io::SafeTensorsWriter w;
    w.add("a.weight", ramp({2, 3}));
    w.add("b", Tensor<double>::from({3}, {1.0, -2.0, 3.5}));
    w.add("faces", Tensor<std::int32_t>::from({1, 3}, {0, 1, 2}));
    w.add("step", Tensor<std::int64_t>::from({1}, {7}));
    w.set_metadata("config", R"({"k_a": 2})");
    w.set_metadata("train.epoch", "3");
    put("safetensors", "mixed.safetensors", w.serialize());
  }
  {
    io::SafeTensorsWriter w;
    w.add("empty", Tensor<float>({0, 3}));
    w.add("scalar", Tensor<float>::from({}, {1.5f}));
    put("safetensors", "empty_and_scalar.safetensors", w.serialize());
  }
  {
    // The half-precision, byte and bool dtypes the writer does not produce, written by hand.
    const std::string h = R"({"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
                          R"("bf":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},)"
                          R"("u":{"dtype":"U8","shape":[2,2],"data_offsets":[8,12]},)"
                          R"("m":{"dtype":"BOOL","shape":[2],"data_offsets":[12,14]},)"
                          R"("i":{"dtype":"I16","shape":[1],"data_offsets":[14,16]},)"
                          R"("__metadata__":{"format":"pt"}})";
    std::string f(8, '\0');
    const std::uint64_t n = h.size();
    std::memcpy(f.data(), &n, 8);
    f += h;
    const unsigned char body[16] = {0x00, 0x3c, 0x01, 0x80, 0x80, 0x3f, 0xc0, 0xff,
                                    1, 2, 3, 255, 0, 1, 0xfe, 0xff};
    f.append(reinterpret_cast<const char*>(body), 16);
    put("safetensors", "half_bf16_u8_bool.safetensors", f);
  }
  for (const auto& entry : fs::directory_iterator(g_out / "safetensors")) {
    const auto b = io::read_file_bytes(entry.path().string());
    std::uint64_t n;
    std::memcpy(&n, b.data(), 8);
    const std::size_t data_bytes = b.size() - 8 - n;
    if (data_bytes > 255) continue;
    std::string s(1, static_cast<char>(data_bytes));
    s.append(reinterpret_cast<const char*>(b.data()) + 8, n);
    put("safetensors_header", entry.path().stem().string() + ".json", s);
  }

  // ---- model configs ----
  {
    nn::DfmConfig c;
    c.vertices = 4;
    c.map_size = 16;
    c.channels = {4, 8};
    c.k_a = 2;
    c.k_e = 2;
    put("model_config", "dfm_conv.json", c.to_json().dump());
    c.apply_variant("no-map");
    c.mlp_hidden = 8;
    c.data_unit_mm = 1000;
    put("model_config", "dfm_mlp.json", c.to_json().dump());
    put("model_config", "dfm_partial.json", R"({"variant": "paper", "vertices": 10, "k_a": 3})");
    put("model_config", "audio_small.json", nn::AudioModelConfig::small(4, {"s1", "s2"}).to_json().dump());
    put("model_config", "faceformer.json", nn::FaceFormerConfig{}.to_json().dump());
    put("model_config", "wav2vec2.json", nn::Wav2Vec2Config{}.to_json().dump());
  }

  // ---- npy ----
  put("npy", "f4_seq_2x4x3.npy", npy_str(ramp({2, 4, 3})));
  put("npy", "f8_2x12.npy", io::serialize_npy(Tensor<double>::from({2, 12}, std::vector<double>(24, 0.25))));
  put("npy", "i4_5.npy", io::serialize_npy(Tensor<std::int32_t>::from({5}, {0, 1, 2, 3, -4})));
  put("npy", "i8_2x2.npy", io::serialize_npy(Tensor<std::int64_t>::from({2, 2}, {1, 2, 3, 4})));
  put("npy", "u1_4.npy", io::serialize_npy(Tensor<std::uint8_t>::from({4}, {0, 1, 0, 1})));
  {
    // version 2.0 header, Fortran order on a 1-d array (allowed), '|i1' data
    std::string dict = "{'descr': '|i1', 'fortran_order': True, 'shape': (3,), }";
    dict.resize(128 - 12 - 1, ' ');  // data start at byte 128
    dict += '\n';
    std::string f = "\x93NUMPY";
    f += '\x02';
    f += '\x00';
    const std::uint32_t hl = static_cast<std::uint32_t>(dict.size());
    f.append(reinterpret_cast<const char*>(&hl), 4);
    f += dict;
    f += "\x01\xff\x02";
    put("npy", "v2_i1_fortran_1d.npy", f);
  }

  // ---- OBJ ----
  put("obj", "tetra.obj", io::serialize_obj(tetra()));
  put("obj", "formats.obj",
      "# corners as i, i/t, i//n, i/t/n and negative; a quad; ignored statements\n"
      "mtllib x.mtl\no thing\nv 0 0 0\nv 1 0 0 1\nv 1 1 0 0.5 0.5 0.5\nv 0 1 0\nv 0.5 0.5 1e-3\n"
      "vt 0 0\nvn 0 0 1\ng grp\ns off\nusemtl m\n"
      "f 1 2 3\nf 1/1 3/1 4/1\nf 1//1 2//1 5//1\nf -5/1/1 -4/1/1 -1/1/1\nf 1 2 3 4\nl 1 2\n");

  // ---- PLY ----
  put("ply", "tetra_ascii.ply", io::serialize_ply(tetra(), io::PlyFormat::Ascii));
  put("ply", "tetra_le.ply", io::serialize_ply(tetra(), io::PlyFormat::BinaryLittleEndian));
  put("ply", "tetra_be.ply", io::serialize_ply(tetra(), io::PlyFormat::BinaryBigEndian));
  {
    // double coordinates in z, x, y order with extra scalar and list properties, a quad face with
    // an int count and uint indices, and an extra element (Florence4D-like exporters)
    std::string h =
        "ply\nformat binary_little_endian 1.0\ncomment exporter\nobj_info x\n"
        "element vertex 4\nproperty double z\nproperty uchar red\nproperty double x\n"
        "property double y\nproperty list uchar float extra\n"
        "element face 1\nproperty list int uint vertex_index\nproperty float quality\n"
        "element edge 1\nproperty int vertex1\nproperty int vertex2\nend_header\n";
    std::string body;
    auto add = [&](const void* p, std::size_t n) { body.append(static_cast<const char*>(p), n); };
    for (int i = 0; i < 4; ++i) {
      const double z = 0.1 * i, x = 0.05 * i, y = -0.02 * i;
      const unsigned char red = 200, cnt = static_cast<unsigned char>(i % 2);
      const float e = 1.5f;
      add(&z, 8); add(&red, 1); add(&x, 8); add(&y, 8); add(&cnt, 1);
      if (cnt) add(&e, 4);
    }
    const std::int32_t four = 4;
    const std::uint32_t idx[4] = {0, 1, 2, 3};
    const float q = 0.5f;
    add(&four, 4); add(idx, 16); add(&q, 4);
    const std::int32_t edge[2] = {0, 1};
    add(edge, 8);
    put("ply", "double_zxy_extra.ply", h + body);
  }

  // ---- WAV ----
  {
    std::vector<float> s(160);
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = 0.5f * static_cast<float>((i % 20) - 10) / 10.0f;
    put("wav", "f32_16k.wav", no_timestamp(io::serialize_wav(s, 16000)));
    put("wav", "pcm16_8k_stereo.wav", io::serialize_wav(s, 8000, 2, io::WavFormat::Pcm16));
    put("wav", "pcm24_44k.wav", io::serialize_wav(std::vector<float>(s.begin(), s.begin() + 90), 44100, 1, io::WavFormat::Pcm24));
    put("wav", "f64_4k.wav", no_timestamp(io::serialize_wav(std::vector<float>(s.begin(), s.begin() + 40), 4000, 1, io::WavFormat::Float64)));
  }

  // ---- dataset folders ----
  {
    const io::Mesh m = tetra();
    const std::string obj = io::serialize_obj(m);
    const std::string seq = npy_str(ramp({3, 4, 3}));
    const std::string seq_flat = npy_str(ramp({2, 12}));
    put("dataset", "minimal.txt",
        archive({{"template.obj", obj}, {"regions/lips.txt", "0\n2\n"}, {"speech/s1_a.npy", seq}}));
    put("dataset", "full.txt",
        archive({{"template.obj", obj},
                 {"units.txt", "# data unit\nm\n"},
                 {"regions/lips.txt", "0\n# comment\n2\n"},
                 {"regions/upper_face.txt", "3\n"},
                 {"regions/weights.npy", npy_str(Tensor<float>::full({4}, 1.0f))},
                 {"templates/s1.npy", npy_str(ramp({4, 3}, 0.02f))},
                 {"speech/s1_a.npy", seq},
                 {"speech/s2_sentence01.npy", seq_flat},
                 {"expression/s1_smile-01.npy", seq},
                 {"split.json", R"({"train": ["s1"], "val": ["s2"], "test": []})"}}));
    put("dataset", "vocaset.txt",
        archive({{"template.obj", obj}, {"regions/lips.txt", "1\n"},
                 {"vertices_npy/FaceTalk_1_TA_sentence01.npy", npy_str(ramp({4, 12}))},
                 {"units.txt", "mm"}}));
  }
  // ---- model files ----
  {
    fs::create_directories(g_out / "model_file");
    const io::Mesh m = tetra();
    nn::DfmConfig c;
    c.apply_variant("no-map");
    c.mlp_hidden = 4;
    c.k_a = 2;
    c.k_e = 2;
    nn::DeformationFusionModule<float>(c, m.vertices, m.faces, 1).save((g_out / "model_file" / "dfm_mlp.safetensors").string());
    rig::Rig r;
    r.name = "tiny";
    r.unit_mm = 1000;
    r.neutral = m.vertices;
    r.shapes = ramp({2, 4, 3});
    r.names = {"jawOpen", "mouthSmile"};
    r.flags = {0, 0};
    r.faces = m.faces;
    r.save((g_out / "model_file" / "rig.safetensors").string());
    rig::LinearMap lm;
    lm.L = Eigen::MatrixXd::Constant(2, 4, 0.5);
    lm.param_names = {"jawOpen", "mouthSmile"};
    lm.rig_name = "tiny";
    lm.rig_vertices = 4;
    lm.k_a = 2;
    lm.l2 = 0.01;
    lm.vertex_weights = Tensor<float>::full({4}, 1.0f);
    lm.save((g_out / "model_file" / "rig_map.safetensors").string());
  }
  return 0;
}
