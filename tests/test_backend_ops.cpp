// The cross-backend op suite (ggml test-backend-ops style): every case of the op-case table
// (bench/op_cases.hpp) on every compiled backend (CompiledBackends) against the reference.
//
// For each case: the reference (Cpu, float) runs forward and, where the op has one, backward with
// a seeded upstream gradient (bench/op_runners.hpp); its outputs must be finite and within the
// case's NMSE bound of the same reference run in double (a check of the reference itself; on the
// cases that are not benchmarked — the paper-scale ones run at batch <= 4, in float only). Then
// each other backend that implements the op natively (native_op / backend_supports) runs the same
// case on the same inputs — under each of its variants (oneDNN: the conv blocked route off, the
// batch-norm route of instance norm) — and every output and gradient must be present, finite and
// within the bound: NMSE = Σ(got − ref)² / Σref². Ops a backend does not implement are counted as
// "not supported", never compared with the reference itself.
//
// Each failure is one line that reproduces it:
//   backend=onednn op=conv2d tag=odd x=(1,3,31,29) w=(8,3,3,3) s=(2,2) ... seed=123 out=dw nmse=3e-04 > 1e-07
// BF_OPS_FILTER=<regex> (ECMAScript, searched in "backend=<name> [variant=<v> ]op=<op> tag=<tag> ...")
// runs only the matching cases, e.g. BF_OPS_FILTER='op=conv2d tag=odd' or 'backend=onednn.*softmax'.
// The summary table (op × backend: passed / failed / not supported) is printed at the end.
#include "test_util.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "../bench/op_runners.hpp"

using namespace blendfuse;
using bfbench::OpCase;
using bfops::Outputs;

namespace {

/// A backend configuration the suite runs besides the default, for the ops it affects.
struct Variant {
  std::string name;                    ///< "" = the default configuration
  std::set<std::string> ops;           ///< ops it affects (empty: all)
  std::function<void(bool)> set;       ///< set(true) enters it, set(false) restores the default
};

template <class B>
std::vector<Variant> variants() {
  return {{"", {}, nullptr}};
}
#ifdef BLENDFUSE_WITH_ONEDNN
template <>
std::vector<Variant> variants<OneDnn>() {
  return {{"", {}, nullptr},
          {"conv_route=plain", {"conv2d", "conv2d_relu", "conv_in_relu"},
           [](bool on) { onednn::set_conv_blocked_route(!on); }},
          {"in_route=batch_norm", {"instance_norm", "instance_norm_relu", "conv_in_relu"},
           [](bool on) {
             onednn::set_instance_norm_route(on ? onednn::InstanceNormRoute::BatchNorm
                                                : onednn::InstanceNormRoute::LayerNorm);
           }}};
}
#endif

template <class T, class B>
Outputs run_case(const OpCase& c) {
  auto r = bfops::make_run<T, B>(c);
  r->forward();
  if (c.backward) {
    r->prepare_backward();
    r->backward();
  }
  return r->outputs();
}

bool all_finite(const Tensor<double>& t) {
  for (Index i = 0; i < t.numel(); ++i)
    if (!std::isfinite(t.data()[i])) return false;
  return true;
}

std::string sci(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

/// What is wrong with `got` against `ref` (empty: nothing): one "out=<name> ..." per output.
std::vector<std::string> compare(const Outputs& ref, const Outputs& got, double bound) {
  std::vector<std::string> bad;
  if (ref.size() != got.size()) {
    bad.push_back("outputs: " + std::to_string(got.size()) + " vs reference " + std::to_string(ref.size()));
    return bad;
  }
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const auto& [name, r] = ref[i];
    const auto& [gname, g] = got[i];
    const std::string o = "out=" + name;
    if (gname != name) {
      bad.push_back(o + " named " + gname);
    } else if (r.shape() != g.shape() || (r.data() == nullptr) != (g.data() == nullptr)) {
      bad.push_back(o + " shape " + g.shape_string() + " vs reference " + r.shape_string());
    } else if (r.data() == nullptr) {
      continue;  // absent on both (e.g. no affine parameters)
    } else if (!all_finite(g)) {
      bad.push_back(o + " has NaN/Inf");
    } else if (!all_finite(r)) {
      bad.push_back(o + " reference has NaN/Inf");
    } else {
      const double e = bft::nmse(r, g);
      if (!(e <= bound)) bad.push_back(o + " nmse=" + sci(e) + " > " + sci(bound));
    }
  }
  return bad;
}

struct Tally {
  int passed = 0, failed = 0, unsupported = 0;
};

struct Suite {
  std::map<std::string, std::map<std::string, Tally>> tally;  // op → backend → counts
  std::vector<std::string> failures;
  std::optional<std::regex> filter;
  int runs = 0;

  bool selected(const std::string& line) const { return !filter || std::regex_search(line, *filter); }
  void fail(const std::string& prefix, const OpCase& c, const std::string& what) {
    failures.push_back(prefix + c.describe() + " seed=" + std::to_string(c.seed()) + " " + what);
  }
};

/// The line the filter sees and a repro line starts with.
std::string prefix(const char* backend, const std::string& variant) {
  return std::string("backend=") + backend + " " + (variant.empty() ? "" : "variant=" + variant + " ");
}

template <class B>
void run_backend(Suite& s, const OpCase& c, const Outputs& ref) {
  Tally& t = s.tally[c.op][B::name];
  const auto kind = op_kind_from_name(c.op);
  if (!kind || !backend_supports<B>(*kind)) {
    if (s.selected(prefix(B::name, "") + c.describe())) ++t.unsupported;
    return;
  }
  if constexpr (!B::host_memory) {
    if (s.selected(prefix(B::name, "") + c.describe())) ++t.unsupported;  // no host↔device copies yet
    return;
  } else {
    for (const Variant& v : variants<B>()) {
      if (!v.ops.empty() && !v.ops.count(c.op)) continue;
      const std::string pre = prefix(B::name, v.name);
      if (!s.selected(pre + c.describe())) continue;
      std::vector<std::string> bad;
      if (v.set) v.set(true);
      try {
        bad = compare(ref, run_case<float, B>(c), c.nmse);
      } catch (const std::exception& e) {
        bad.push_back(std::string("threw: ") + e.what());
      }
      if (v.set) v.set(false);
      ++s.runs;
      if (bad.empty()) {
        ++t.passed;
      } else {
        ++t.failed;
        for (const auto& b : bad) s.fail(pre, c, b);
      }
    }
  }
}

void run_case_all(Suite& s, const OpCase& c) {
  // Is any (backend, variant) of this case selected?
  bool any = false;
  for_each_backend([&]<class B>() {
    for (const Variant& v : variants<B>())
      if ((v.ops.empty() || v.ops.count(c.op)) && s.selected(prefix(B::name, v.name) + c.describe())) any = true;
  });
  if (!any) return;

  // The reference in float, checked against itself in double.
  Tally& rt = s.tally[c.op][Cpu::name];
  const std::string pre = prefix(Cpu::name, "");
  Outputs ref;
  std::vector<std::string> bad;
  try {
    ref = run_case<float, Cpu>(c);
    // the double check on the small cases only (the paper-scale ones would double the time)
    if (c.bench == bfbench::Bench::None) bad = compare(run_case<double, Cpu>(c), ref, c.nmse);
  } catch (const std::exception& e) {
    bad.push_back(std::string("threw: ") + e.what());
  }
  ++s.runs;
  if (bad.empty()) {
    ++rt.passed;
  } else {
    ++rt.failed;
    for (const auto& b : bad) s.fail(pre + "(float vs double) ", c, b);
    return;
  }
  for_each_backend([&]<class B>() {
    if constexpr (!std::is_same_v<B, Cpu>) run_backend<B>(s, c, ref);
  });
}

void print_summary(const Suite& s, double seconds) {
  std::vector<std::string> names;
  for_each_backend([&]<class B>() { names.emplace_back(B::name); });
  std::ostringstream o;
  o << "\nop suite: " << bfbench::op_cases().size() << " cases, " << s.runs << " runs, " << s.failures.size()
    << " failure lines, " << sci(seconds) << " s\n";
  o << "| op                 |";
  for (const auto& n : names) o << " " << n << (n == Cpu::name ? " (reference vs double)" : "") << " |";
  o << "\n|---|";
  for (std::size_t i = 0; i < names.size(); ++i) o << "---|";
  o << "\n";
  for (OpKind k : all_op_kinds) {
    const auto it = s.tally.find(op_name(k));
    if (it == s.tally.end()) continue;
    std::string op = op_name(k);
    op.resize(std::max<std::size_t>(op.size(), 18), ' ');
    o << "| " << op << " |";
    for (const auto& n : names) {
      const auto jt = it->second.find(n);
      const Tally t = jt == it->second.end() ? Tally{} : jt->second;
      std::string cell;
      if (t.passed + t.failed == 0 && t.unsupported > 0)
        cell = "not supported";
      else if (t.failed == 0)
        cell = std::to_string(t.passed) + " passed";
      else
        cell = std::to_string(t.failed) + " FAILED, " + std::to_string(t.passed) + " passed";
      o << " " << cell << " |";
    }
    o << "\n";
  }
  std::cout << o.str() << std::flush;
}

}  // namespace

TEST_CASE("op suite: every op case on every compiled backend matches the reference") {
  Suite s;
  if (const char* f = std::getenv("BF_OPS_FILTER"); f && *f) {
    s.filter = std::regex(f);
    MESSAGE("BF_OPS_FILTER=", std::string(f));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const bool verbose = std::getenv("BF_OPS_VERBOSE") != nullptr;
  for (const OpCase& row : bfbench::op_cases()) {
    const OpCase c = bfbench::suite_case(row);  // paper-scale cases at batch <= 4
    const auto c0 = std::chrono::steady_clock::now();
    run_case_all(s, c);
    if (verbose)
      std::cout << sci(std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count()) << " s  "
                << c.describe() << "\n";
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& f : s.failures) FAIL_CHECK(f);
  print_summary(s, secs);
  CHECK(s.failures.empty());
  if (!s.filter) CHECK(s.runs > 0);
}

TEST_CASE("op suite: the table, the runners and the backend registry agree") {
  // every row names a known op, has a runner with the right parameter struct, and a unique name
  const auto make_cpu = [](const OpCase& c) { return bfops::make_run<float, Cpu>(c); };
  std::set<std::string> seen, ops;
  for (const OpCase& c : bfbench::op_cases()) {
    CAPTURE(c.describe());
    REQUIRE(op_kind_from_name(c.op).has_value());
    CHECK_NOTHROW((void)make_cpu(c));
    CHECK_MESSAGE(seen.insert(c.op + "/" + c.tag()).second, "duplicate case name ", c.op, "/", c.tag());
    CHECK(c.nmse > 0);
    ops.insert(c.op);
  }
  // every op kind has at least one case
  for (OpKind k : all_op_kinds) CHECK_MESSAGE(ops.count(op_name(k)), "no op case for ", op_name(k));
  // a row with the wrong parameter struct is an error, not a crash
  const OpCase wrong{"conv2d", bfbench::LinearCase{"x", 1, 2, 3}};
  CHECK_THROWS_AS((void)make_cpu(wrong), std::invalid_argument);
  const OpCase unknown{"no_such_op", bfbench::LinearCase{"x", 1, 2, 3}};
  CHECK_THROWS_AS((void)make_cpu(unknown), std::invalid_argument);

  // CompiledBackends is compiled_backends() as types, reference first
  std::vector<std::string> names;
  for_each_backend([&]<class B>() { names.emplace_back(B::name); });
  CHECK(names == compiled_backends());
  REQUIRE(!names.empty());
  CHECK(names.front() == std::string(Cpu::name));

  // supports: the reference has every op; the runtime query agrees with the trait
  for (OpKind k : all_op_kinds) {
    CHECK(backend_supports<Cpu>(k));
    CHECK(backend_supports("cpu", k));
    CHECK(op_kind_from_name(op_name(k)) == k);
  }
  CHECK_FALSE(backend_supports("no-such-backend", OpKind::conv2d));
  static_assert(native_op<Cpu, OpKind::mha>);
#ifdef BLENDFUSE_WITH_ONEDNN
  static_assert(native_op<OneDnn, OpKind::conv2d> && native_op<OneDnn, OpKind::softmax>);
  static_assert(native_op<OneDnn, OpKind::group_norm> && native_op<OneDnn, OpKind::attention_inference>);
  static_assert(!native_op<OneDnn, OpKind::sdpa> && !native_op<OneDnn, OpKind::interp>);
  CHECK(backend_supports("onednn", OpKind::matmul));
  CHECK_FALSE(backend_supports("onednn", OpKind::interp));
#endif
#ifdef BLENDFUSE_WITH_CUDA
  CHECK_FALSE(backend_supports("cuda", OpKind::conv2d));  // no op specialisations yet
#endif
}
