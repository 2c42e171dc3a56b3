#include "test_util.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "blendfuse/data/dataset.hpp"
#include "blendfuse/io/mesh.hpp"
#include "blendfuse/io/npy.hpp"

using namespace blendfuse;
using data::Dataset;
using data::Domain;
using data::Split;
namespace fs = std::filesystem;

namespace {

constexpr Index kV = 5;

/// A fresh, empty temp folder for one test.
std::string fresh_dir(const std::string& name) {
  const auto dir = fs::temp_directory_path() / "blendfuse_tests" / ("dataset_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

io::Mesh template_mesh() {
  io::Mesh m;
  m.vertices = Tensor<float>::from({kV, 3}, {0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0.5f, 0.5f, 1});
  m.faces = Tensor<std::int32_t>::from({3, 3}, {0, 1, 4, 1, 2, 4, 2, 3, 4});
  return m;
}

/// Positions (T, V, 3) with a distinct value per element: base + 0.01·(t+1)·(1 + flat index).
Tensor<float> positions(Index T, const Tensor<float>& base, float scale) {
  Tensor<float> p({T, kV, 3});
  for (Index t = 0; t < T; ++t)
    for (Index k = 0; k < kV * 3; ++k)
      p[t * kV * 3 + k] = base[k] + scale * static_cast<float>((t + 1) * (1 + k));
  return p;
}

Tensor<float> subj_a_template() {
  Tensor<float> t = template_mesh().vertices.clone();
  for (Index i = 0; i < t.numel(); ++i) t[i] += 0.1f * static_cast<float>(i % 3 + 1);
  return t;
}

void mkdirs(const std::string& d) { fs::create_directories(d); }

/// The good test folder: two subjects, subjA with its own template, subjB on the default one.
std::string write_good_dataset(const std::string& name) {
  const std::string d = fresh_dir(name);
  for (const char* sub : {"/regions", "/templates", "/speech", "/expression"}) mkdirs(d + sub);
  io::save_obj(d + "/template.obj", template_mesh());
  write_text(d + "/regions/lips.txt", "1\n2\n# a comment\n\n4\n");
  write_text(d + "/regions/upper_face.txt", "0\n3\n");
  io::save_npy(d + "/regions/weights.npy", Tensor<float>::from({kV}, {1, 2, 3, 4, 5}));
  const auto ta = subj_a_template();
  const auto tb = template_mesh().vertices;
  io::save_npy(d + "/templates/subjA.npy", ta);
  io::save_npy(d + "/speech/subjA_sentence01.npy", positions(4, ta, 0.01f));
  write_text(d + "/speech/subjA_sentence01.wav", "RIFF");  // recorded, never read
  // (T, V*3) float64 layout for subjB
  io::save_npy(d + "/speech/subjB_sentence02.npy", positions(3, tb, 0.02f).reshape({3, kV * 3}).cast<double>());
  write_text(d + "/speech/notes.txt", "ignored");
  io::save_npy(d + "/expression/subjA_smile01.npy", positions(2, ta, 0.03f));
  // '_' inside the sequence name: subjB is known from split.json
  io::save_npy(d + "/expression/subjB_brow_raise01.npy", positions(5, tb, 0.04f));
  write_text(d + "/split.json", R"({"train": ["subjA"], "val": ["subjB"], "test": []})");
  write_text(d + "/units.txt", "mm\n");  // a unit-cube face: too small to tell its unit
  return d;
}

/// Checks that loading `dir` throws IoError whose message contains every string in `parts`.
void check_load_fails(const std::string& dir, const std::vector<std::string>& parts) {
  try {
    (void)Dataset::load(dir);
    FAIL("expected IoError, dataset loaded fine: ", dir);
  } catch (const IoError& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "'", p, "' not in: ", msg);
  }
}

}  // namespace

TEST_CASE("dataset: parse_subject") {
  CHECK(data::parse_subject("FaceTalk_170725_00137_TA_sentence01") == "FaceTalk_170725_00137_TA");
  CHECK(data::parse_subject("FaceTalk_170809_00138_TA_sentence40") == "FaceTalk_170809_00138_TA");
  CHECK(data::parse_subject("subj03_seq07") == "subj03");
  CHECK(data::parse_subject("subj03_sentence_07") == "subj03");  // last "_sentence" wins over last '_'
  CHECK(data::parse_subject("a_b_c") == "a_b");
  // known subjects disambiguate sequence names that contain '_'
  CHECK(data::parse_subject("subj00_brow_raise01") == "subj00_brow");
  CHECK(data::parse_subject("subj00_brow_raise01", {"subj00", "subj1"}) == "subj00");
  CHECK(data::parse_subject("F_01_x_y", {"F", "F_01"}) == "F_01");  // longest known prefix
  CHECK(data::parse_subject("subj1_x", {"subj10"}) == "subj1");     // a known name must end at '_'
  CHECK_THROWS_WITH_AS(data::parse_subject("nounderscore"), doctest::Contains("<subject>_<sequence>"), ArgumentError);
  CHECK_THROWS_AS(data::parse_subject("_seq01"), ArgumentError);
  CHECK_THROWS_AS(data::parse_subject("subj01_"), ArgumentError);
  CHECK_THROWS_AS(data::parse_subject("subj01", {"subj01"}), ArgumentError);
}

TEST_CASE("dataset: loads a folder; deformations are sequence minus subject template") {
  const auto d = write_good_dataset("good");
  const Dataset ds = Dataset::load(d);
  CHECK(ds.num_vertices() == kV);
  CHECK(ds.faces.shape() == Shape{3, 3});
  CHECK(ds.faces(1, 1) == 2);
  BFT_CHECK_CLOSE(ds.template_vertices, template_mesh().vertices, 0.0, 0.0);
  CHECK(ds.lips == std::vector<std::int32_t>{1, 2, 4});
  CHECK(ds.upper_face == std::vector<std::int32_t>{0, 3});
  BFT_CHECK_CLOSE(ds.vertex_weights, Tensor<float>::from({kV}, {1, 2, 3, 4, 5}), 0.0, 0.0);

  CHECK(ds.subjects() == std::vector<std::string>{"subjA", "subjB"});
  CHECK(ds.subjects_with_own_template == std::set<std::string>{"subjA"});
  BFT_CHECK_CLOSE(ds.template_of("subjA"), subj_a_template(), 0.0, 0.0);
  BFT_CHECK_CLOSE(ds.template_of("subjB"), template_mesh().vertices, 0.0, 0.0);
  CHECK_THROWS_AS(ds.template_of("nobody"), ArgumentError);

  REQUIRE(ds.speech.size() == 2);
  REQUIRE(ds.expression.size() == 2);
  const auto& s0 = ds.speech[0];
  CHECK(s0.name == "subjA_sentence01");
  CHECK(s0.subject == "subjA");
  CHECK(s0.domain == Domain::Speech);
  CHECK(fs::path(s0.wav_path).filename() == "subjA_sentence01.wav");
  CHECK(ds.speech[1].wav_path.empty());
  CHECK(ds.speech[1].subject == "subjB");
  CHECK(ds.expression[0].subject == "subjA");
  CHECK(ds.expression[1].name == "subjB_brow_raise01");
  CHECK(ds.expression[1].subject == "subjB");

  // deformation = positions − the subject's template: 0.01·(t+1)·(1+k) by construction
  auto expected = [](Index T, float scale) {
    Tensor<float> e({T, kV, 3});
    for (Index t = 0; t < T; ++t)
      for (Index k = 0; k < kV * 3; ++k) e[t * kV * 3 + k] = scale * static_cast<float>((t + 1) * (1 + k));
    return e;
  };
  BFT_CHECK_CLOSE(s0.deformations, expected(4, 0.01f), 1e-5, 1e-6);  // own template subtracted
  BFT_CHECK_CLOSE(ds.speech[1].deformations, expected(3, 0.02f), 1e-5, 1e-6);  // f8 (T, V*3), default template
  BFT_CHECK_CLOSE(ds.expression[0].deformations, expected(2, 0.03f), 1e-5, 1e-6);
  BFT_CHECK_CLOSE(ds.expression[1].deformations, expected(5, 0.04f), 1e-5, 1e-6);

  // splits
  CHECK(ds.has_split_file);
  CHECK(ds.subjects_in(Split::Train) == std::vector<std::string>{"subjA"});
  CHECK(ds.subjects_in(Split::Val) == std::vector<std::string>{"subjB"});
  CHECK(ds.subjects_in(Split::Test).empty());
  CHECK(ds.split_of("subjB") == Split::Val);
  const auto train_speech = ds.sequences(Domain::Speech, Split::Train);
  REQUIRE(train_speech.size() == 1);
  CHECK(train_speech[0]->name == "subjA_sentence01");
  CHECK(ds.sequences(Domain::Expression, Split::Val).size() == 1);
  CHECK(ds.sequences(Domain::Expression, Split::Test).empty());
  CHECK(ds.num_frames(Domain::Speech, Split::Train) == 4);
  CHECK(ds.num_frames(Domain::Expression, Split::Val) == 5);
  const auto fr = ds.frames(Domain::Expression, Split::Val);
  REQUIRE(fr.size() == 5);
  CHECK(fr[3].sequence == 1);
  CHECK(fr[3].frame == 3);
  const auto f = ds.frame(Domain::Expression, fr[3]);
  CHECK(f.shape() == Shape{kV, 3});
  CHECK(f(2, 1) == doctest::Approx(0.04 * 4 * (1 + 7)).epsilon(1e-5));
}

TEST_CASE("dataset: defaults without optional files") {
  const auto d = write_good_dataset("defaults");
  fs::remove(d + "/split.json");
  fs::remove(d + "/regions/weights.npy");
  fs::remove(d + "/regions/upper_face.txt");
  fs::remove_all(d + "/templates");
  fs::remove_all(d + "/expression");
  const Dataset ds = Dataset::load(d);
  CHECK_FALSE(ds.has_split_file);
  CHECK(ds.subjects_in(Split::Train) == std::vector<std::string>{"subjA", "subjB"});
  CHECK(ds.subjects_in(Split::Val).empty());
  CHECK(ds.upper_face.empty());
  CHECK(ds.expression.empty());
  BFT_CHECK_CLOSE(ds.vertex_weights, Tensor<float>::full({kV}, 1.0f), 0.0, 0.0);
  // without templates/subjA.npy the canonical template is subtracted
  const auto pos = io::load_npy<float>(d + "/speech/subjA_sentence01.npy");
  Tensor<float> e({4, kV, 3});
  for (Index i = 0; i < e.numel(); ++i) e[i] = pos[i] - template_mesh().vertices[i % (kV * 3)];
  BFT_CHECK_CLOSE(ds.speech[0].deformations, e, 1e-6, 1e-7);
  CHECK(ds.num_frames(Domain::Speech, Split::Train) == 7);
}

TEST_CASE("dataset: bad inputs give IoErrors naming the file") {
  SUBCASE("missing template.obj") {
    const auto d = write_good_dataset("no_template");
    fs::remove(d + "/template.obj");
    check_load_fails(d, {"template.obj", "not found"});
  }
  SUBCASE("missing dataset folder") {
    check_load_fails(fresh_dir("gone") + "/nope", {"nope", "dataset folder not found"});
  }
  SUBCASE("degenerate template face (was a 0-based MeshTopology error without file or line)") {
    const auto d = write_good_dataset("degenerate_face");
    std::ofstream(d + "/template.obj", std::ios::app) << "f 5 5 5\n";
    check_load_fails(d, {"template.obj", "degenerate face: vertex 5 is used twice"});
  }
  SUBCASE("missing lips.txt") {
    const auto d = write_good_dataset("no_lips");
    fs::remove(d + "/regions/lips.txt");
    check_load_fails(d, {"lips.txt", "not found"});
  }
  SUBCASE("lip index out of range") {
    const auto d = write_good_dataset("lips_range");
    write_text(d + "/regions/lips.txt", "1\n5\n");
    check_load_fails(d, {"lips.txt", "line 2", "index 5 is out of range [0, 5)", "template.obj has 5 vertices"});
  }
  SUBCASE("negative, non-integer, duplicate and empty lips") {
    const auto d = write_good_dataset("lips_bad");
    write_text(d + "/regions/lips.txt", "-1\n");
    check_load_fails(d, {"lips.txt", "out of range"});
    write_text(d + "/regions/lips.txt", "1\n2.5\n");
    check_load_fails(d, {"lips.txt", "line 2", "'2.5' is not an integer"});
    write_text(d + "/regions/lips.txt", "1 2\n");
    check_load_fails(d, {"lips.txt", "one integer per line"});
    write_text(d + "/regions/lips.txt", "3\n3\n");
    check_load_fails(d, {"lips.txt", "listed twice"});
    write_text(d + "/regions/lips.txt", "\n# nothing\n");
    check_load_fails(d, {"lips.txt", "no vertex indices"});
  }
  SUBCASE("upper_face index out of range") {
    const auto d = write_good_dataset("upper_range");
    write_text(d + "/regions/upper_face.txt", "0\n99\n");
    check_load_fails(d, {"upper_face.txt", "99"});
  }
  SUBCASE("mismatched vertex count in a sequence") {
    const auto d = write_good_dataset("seq_vcount");
    io::save_npy(d + "/speech/subjB_sentence02.npy", Tensor<float>({3, kV - 1, 3}));
    check_load_fails(d, {"subjB_sentence02.npy", "vertex count mismatch", "has 4 vertices", "template.obj has 5"});
  }
  SUBCASE("mismatched vertex count in (T, V*3) layout and bad shapes") {
    const auto d = write_good_dataset("seq_vcount2");
    io::save_npy(d + "/expression/subjA_smile01.npy", Tensor<float>({2, (kV + 1) * 3}));
    check_load_fails(d, {"subjA_smile01.npy", "has 6 vertices", "template.obj has 5"});
    io::save_npy(d + "/expression/subjA_smile01.npy", Tensor<float>({2, kV, 2}));
    check_load_fails(d, {"subjA_smile01.npy", "(T, V, 3) or (T, V*3)"});
    io::save_npy(d + "/expression/subjA_smile01.npy", Tensor<float>({0, kV, 3}));
    check_load_fails(d, {"subjA_smile01.npy", "no frames"});
  }
  SUBCASE("NaN in a sequence") {
    const auto d = write_good_dataset("seq_nan");
    auto p = positions(2, subj_a_template(), 0.03f);
    p(1, 3, 2) = std::numeric_limits<float>::quiet_NaN();
    io::save_npy(d + "/expression/subjA_smile01.npy", p);
    check_load_fails(d, {"subjA_smile01.npy", "non-finite", "frame 1", "vertex 3", "coordinate 2"});
  }
  SUBCASE("truncated npy") {
    const auto d = write_good_dataset("seq_trunc");
    const std::string p = d + "/speech/subjA_sentence01.npy";
    fs::resize_file(p, fs::file_size(p) - 7);
    check_load_fails(d, {"subjA_sentence01.npy", "truncated"});
  }
  SUBCASE("bad subject template and weights") {
    const auto d = write_good_dataset("bad_tmpl");
    io::save_npy(d + "/templates/subjA.npy", Tensor<float>({kV + 2, 3}));
    check_load_fails(d, {"subjA.npy", "has 7 vertices", "template.obj has 5"});
    io::save_npy(d + "/templates/subjA.npy", subj_a_template());
    io::save_npy(d + "/regions/weights.npy", Tensor<float>({kV, 1}));
    check_load_fails(d, {"weights.npy", "(5,)"});
    io::save_npy(d + "/regions/weights.npy", Tensor<float>::from({kV}, {1, 1, -1, 1, 1}));
    check_load_fails(d, {"weights.npy", "negative weight", "vertex 2"});
  }
  SUBCASE("split.json: invalid JSON") {
    const auto d = write_good_dataset("split_json");
    write_text(d + "/split.json", R"({"train": ["subjA", )");
    check_load_fails(d, {"split.json", "invalid JSON"});
  }
  SUBCASE("split.json: unknown subject, duplicates, wrong types") {
    const auto d = write_good_dataset("split_subject");
    write_text(d + "/split.json", R"({"train": ["subjA"], "test": ["subjZ"]})");
    check_load_fails(d, {"split.json", "unknown subject 'subjZ'", "\"test\""});
    write_text(d + "/split.json", R"({"train": ["subjA"], "val": ["subjA"]})");
    check_load_fails(d, {"split.json", "'subjA' is listed in both \"train\" and \"val\""});
    write_text(d + "/split.json", R"({"training": ["subjA"]})");
    check_load_fails(d, {"split.json", "unknown key \"training\""});
    write_text(d + "/split.json", R"({"train": "subjA"})");
    check_load_fails(d, {"split.json", "must be an array"});
    write_text(d + "/split.json", R"({"train": [3]})");
    check_load_fails(d, {"split.json", "subject names"});
    write_text(d + "/split.json", R"(["subjA"])");
    check_load_fails(d, {"split.json", "expected an object"});
  }
  SUBCASE("empty or missing speech folder") {
    const auto d = write_good_dataset("speech_empty");
    fs::remove(d + "/speech/subjA_sentence01.npy");
    fs::remove(d + "/speech/subjB_sentence02.npy");
    check_load_fails(d, {"speech", "no .npy sequences in the speech folder"});
    fs::remove_all(d + "/speech");
    check_load_fails(d, {"speech", "speech folder not found"});
  }
  SUBCASE("empty expression folder") {
    const auto d = write_good_dataset("expr_empty");
    fs::remove(d + "/expression/subjA_smile01.npy");
    fs::remove(d + "/expression/subjB_brow_raise01.npy");
    check_load_fails(d, {"expression", "no .npy sequences in the expression folder"});
  }
  SUBCASE("sequence name without a subject") {
    const auto d = write_good_dataset("bad_name");
    io::save_npy(d + "/speech/sentence03.npy", positions(2, template_mesh().vertices, 0.01f));
    check_load_fails(d, {"sentence03.npy", "<subject>_<sequence>"});
  }
}

TEST_CASE("dataset: FaceFormer VOCAset layout (vertices_npy at 60 fps, wav/, FLAME_sample.ply)") {
  const std::string d = fresh_dir("vocaset");
  mkdirs(d + "/vertices_npy");
  mkdirs(d + "/wav");
  mkdirs(d + "/templates");
  mkdirs(d + "/regions");
  io::save_ply(d + "/FLAME_sample.ply", template_mesh());  // no template.obj: the PLY is used
  write_text(d + "/regions/lips.txt", "0\n1\n");
  const std::string subj = "FaceTalk_170725_00137_TA";
  const auto tmpl = subj_a_template();
  io::save_npy(d + "/templates/" + subj + ".npy", tmpl);
  // 5 frames at 60 fps, (T, V*3) float64 as FaceFormer's files
  io::save_npy(d + "/vertices_npy/" + subj + "_sentence01.npy",
               positions(5, tmpl, 0.01f).reshape({5, kV * 3}).cast<double>());
  io::save_npy(d + "/vertices_npy/FaceTalk_170809_00138_TA_sentence02.npy",
               positions(2, template_mesh().vertices, 0.01f).reshape({2, kV * 3}).cast<double>());
  write_text(d + "/wav/" + subj + "_sentence01.wav", "RIFF");
  write_text(d + "/units.txt", "m\n");

  const Dataset ds = Dataset::load(d);
  REQUIRE(ds.speech.size() == 2);
  CHECK(ds.expression.empty());
  const auto& q = ds.speech[0];
  CHECK(q.subject == subj);
  CHECK(q.frame_step == 2);
  CHECK(fs::path(q.wav_path) == fs::path(d) / "wav" / (subj + "_sentence01.wav"));
  REQUIRE(q.num_frames() == 3);  // frames 0, 2, 4 of 5
  for (Index t = 0; t < 3; ++t)
    for (Index k = 0; k < kV * 3; ++k)
      CHECK(q.deformations[t * kV * 3 + k] ==
            doctest::Approx(0.01 * static_cast<double>((2 * t + 1) * (1 + k))).epsilon(1e-5));
  CHECK(ds.speech[1].subject == "FaceTalk_170809_00138_TA");
  CHECK(ds.speech[1].num_frames() == 1);  // frame 0 of 2
  CHECK(ds.speech[1].wav_path.empty());
  CHECK(ds.subjects_in(Split::Train).size() == 2);

  // options: explicit template and lips, no subsampling
  fs::remove(d + "/FLAME_sample.ply");
  check_load_fails(d, {"template.obj", "not found"});
  io::save_obj(d + "/flame.obj", template_mesh());
  write_text(d + "/flame_lips.txt", "3\n");
  data::DatasetOptions opt;
  opt.template_mesh = d + "/flame.obj";
  opt.lips = d + "/flame_lips.txt";
  opt.vocaset_frame_step = 1;
  const Dataset ds2 = Dataset::load(d, opt);
  CHECK(ds2.lips == std::vector<std::int32_t>{3});
  CHECK(ds2.speech[0].num_frames() == 5);
}

TEST_CASE("dataset: Florence4D OBJ-per-frame folders convert to expression/*.npy") {
  const std::string root = fresh_dir("florence_src");
  const std::string out = write_good_dataset("florence_out");
  const std::string seq = root + "/F01/Angry_1";
  mkdirs(seq);
  // frame names that sort differently as plain strings (frame_10 < frame_2)
  const int ids[] = {1, 2, 10};
  for (int i = 0; i < 3; ++i) {
    io::Mesh m = template_mesh();
    for (Index k = 0; k < m.vertices.numel(); ++k) m.vertices[k] += 0.5f * static_cast<float>(i + 1);
    io::save_obj(seq + "/frame_" + std::to_string(ids[i]) + ".obj", m);
  }
  write_text(seq + "/readme.txt", "not a frame");
  mkdirs(root + "/F01/empty_folder");

  const auto arr = data::convert_obj_sequence_folder(seq, "");
  REQUIRE(arr.shape() == Shape{3, kV, 3});
  for (Index t = 0; t < 3; ++t)
    CHECK(arr(t, 4, 2) == doctest::Approx(1.0 + 0.5 * static_cast<double>(t + 1)));  // natural order 1, 2, 10

  const auto written = data::convert_florence4d(root, out, kV);
  REQUIRE(written.size() == 1);
  CHECK(fs::path(written[0]).filename() == "F01_Angry-1.npy");
  const auto back = io::load_npy<float>(written[0]);
  BFT_CHECK_CLOSE(back, arr, 0.0, 0.0);
  write_text(out + "/split.json", R"({"train": ["subjA", "F01"], "val": ["subjB"]})");
  const Dataset ds = Dataset::load(out);
  REQUIRE(ds.expression.size() == 3);
  CHECK(ds.expression[0].subject == "F01");
  CHECK(ds.expression[0].num_frames() == 3);
  CHECK(ds.sequences(Domain::Expression, Split::Train).size() == 2);

  SUBCASE("bad frame folders") {
    CHECK_THROWS_WITH_AS(data::convert_obj_sequence_folder(root + "/F01/empty_folder", ""),
                         doctest::Contains("no .obj or .ply frames"), IoError);
    CHECK_THROWS_WITH_AS(data::convert_obj_sequence_folder(root + "/missing", ""),
                         doctest::Contains("folder not found"), IoError);
    CHECK_THROWS_WITH_AS(data::convert_obj_sequence_folder(seq, "", kV + 1),
                         doctest::Contains("frame_1.obj: vertex count mismatch"), IoError);
    io::Mesh m = template_mesh();
    m.faces = Tensor<std::int32_t>::from({2, 3}, {0, 1, 4, 1, 2, 4});
    io::save_obj(seq + "/frame_2.obj", m);
    CHECK_THROWS_WITH_AS(data::convert_obj_sequence_folder(seq, ""),
                         doctest::Contains("frame_2.obj: topology differs"), IoError);
    io::Mesh small;
    small.vertices = Tensor<float>({kV - 1, 3});
    small.faces = Tensor<std::int32_t>::from({1, 3}, {0, 1, 2});
    io::save_obj(seq + "/frame_10.obj", small);
    fs::remove(seq + "/frame_2.obj");
    CHECK_THROWS_WITH_AS(data::convert_obj_sequence_folder(seq, ""),
                         doctest::Contains("frame_10.obj: vertex count mismatch: frame has 4"), IoError);
    CHECK_THROWS_WITH_AS(data::convert_florence4d(root + "/F01/empty_folder", out),
                         doctest::Contains("no <subject>/<expression>/ folders"), IoError);
  }
}

TEST_CASE("dataset: the length unit (--units, units.txt, or the template's size)") {
  const auto d = write_good_dataset("units");
  auto load_with = [&](const std::string& units) {
    data::DatasetOptions opt;
    opt.units = units;
    return Dataset::load(d, opt);
  };
  {
    const Dataset ds = Dataset::load(d);  // units.txt: mm
    CHECK(ds.unit_mm == 1.0);
    CHECK(ds.units() == "mm");
    CHECK(ds.unit_source == "units.txt");
  }
  write_text(d + "/units.txt", "# written by hand\nm   # metres\n\n");
  const Dataset dm = Dataset::load(d);
  CHECK(dm.unit_mm == 1000.0);
  CHECK(dm.units() == "m");
  // the option wins over units.txt, and says so
  const Dataset dc = load_with("cm");
  CHECK(dc.unit_mm == 10.0);
  CHECK(dc.unit_source == "--units (overrides units.txt: m)");
  CHECK(load_with("m").unit_source == "--units");
  CHECK_THROWS_WITH_AS(load_with("furlong"), doctest::Contains("unknown length unit 'furlong'"), ArgumentError);
  // bad units.txt files name the file
  write_text(d + "/units.txt", "inch\n");
  check_load_fails(d, {"units.txt", "unknown length unit 'inch'"});
  write_text(d + "/units.txt", "mm m\n");
  check_load_fails(d, {"units.txt", "more than one"});
  write_text(d + "/units.txt", "# nothing\n");
  check_load_fails(d, {"units.txt", "no unit"});

  // data are kept in their unit; rescale_to_mm converts templates and deformations
  Dataset r = dm;
  r.speech[0].deformations = dm.speech[0].deformations.clone();
  r.template_vertices = dm.template_vertices.clone();
  r.rescale_to_mm();
  CHECK(r.unit_mm == 1.0);
  CHECK(r.speech[0].deformations[7] == doctest::Approx(1000.0 * dm.speech[0].deformations[7]));
  CHECK(r.template_vertices[4] == doctest::Approx(1000.0 * dm.template_vertices[4]));

  // auto-detection from the template's largest extent
  fs::remove(d + "/units.txt");
  auto with_template_scale = [&](float c) {
    io::Mesh m = template_mesh();
    for (Index i = 0; i < m.vertices.numel(); ++i) m.vertices[i] *= c;
    io::save_obj(d + "/template.obj", m);
  };
  CHECK(data::bounding_box_extent(template_mesh().vertices) == doctest::Approx(1.0));
  check_load_fails(d, {"template.obj", "cannot tell the length unit", "largest extent is 1", "units.txt", "--units"});
  CHECK(load_with("mm").unit_mm == 1.0);  // an explicit unit settles it
  with_template_scale(0.2f);               // a face 0.2 across: metres
  const Dataset a1 = Dataset::load(d);
  CHECK(a1.unit_mm == 1000.0);
  CHECK(a1.unit_source.rfind("auto: template extent 0.2", 0) == 0);
  with_template_scale(180.0f);             // 180 across: millimetres
  CHECK(Dataset::load(d).unit_mm == 1.0);
  with_template_scale(12.0f);              // 12 across: cm? refused
  check_load_fails(d, {"template.obj", "cannot tell the length unit"});
}
