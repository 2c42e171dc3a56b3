// blendfuse — phoneme timelines and the viseme table of the procedural generator.
//
// Phoneme symbols are espeak-ng's English mnemonics ("p", "b", "m", "tS", "A:", "oU", "_:" …), so
// timelines from libespeak-ng and the random fallback share one inventory. Times are in seconds.
//
// espeak-ng (optional): compiled in only when BLENDFUSE_WITH_ESPEAK is defined by the build (which
// then links libespeak-ng) and <espeak-ng/speak_lib.h> exists. Text is synthesised synchronously
// with espeakEVENT_PHONEME events; each event's audio position gives the phoneme's start, the next
// event's its end. espeak-ng keeps global state, so calls are serialised by a mutex; the synth
// callback is (re)installed on every call.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "blendfuse/core/rng.hpp"

#if defined(BLENDFUSE_WITH_ESPEAK) && BLENDFUSE_WITH_ESPEAK && __has_include(<espeak-ng/speak_lib.h>)
#define BLENDFUSE_HAVE_ESPEAK 1
#include <espeak-ng/speak_lib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#else
#define BLENDFUSE_HAVE_ESPEAK 0
#endif

namespace blendfuse::data {

struct PhonemeSegment {
  std::string phoneme;  // espeak-ng mnemonic; "_" for silence
  double start = 0;     // seconds
  double end = 0;       // seconds
};

/// Viseme classes of the generator.
enum class Viseme : int { Sil, BMP, FV, TH, SZ, TDN, L, SH, KG, R, W, Y, AA, EH, IY, UW, OH, ER };

/// Speech bases in order (the generator's ground truth uses the first Ka of them).
inline constexpr int kMaxSpeechBases = 6;
inline const std::array<const char*, kMaxSpeechBases>& speech_basis_names() {
  static const std::array<const char*, kMaxSpeechBases> n = {
      "jaw_open", "lip_round", "lip_press", "lip_stretch", "upper_lip_raise", "lower_lip_funnel"};
  return n;
}
inline constexpr int kJawOpen = 0, kLipRound = 1, kLipPress = 2, kLipStretch = 3,
                     kUpperLipRaise = 4, kLowerLipFunnel = 5;

/// Viseme class of an espeak-ng mnemonic (unknown symbols fall back on their first letter).
inline Viseme viseme_of(const std::string& ph) {
  if (ph.empty() || ph[0] == '_' || ph == "||" || ph == "|") return Viseme::Sil;
  const std::string p = ph;
  auto is = [&](std::initializer_list<const char*> l) {
    for (const char* s : l)
      if (p == s) return true;
    return false;
  };
  if (is({"p", "b", "m", "m-"})) return Viseme::BMP;
  if (is({"f", "v"})) return Viseme::FV;
  if (is({"T", "D"})) return Viseme::TH;
  if (is({"s", "z"})) return Viseme::SZ;
  if (is({"t", "d", "n", "t#", "d#", "n-", "?", "t2", "d2"})) return Viseme::TDN;
  if (is({"l", "l/", "@L", "l#"})) return Viseme::L;
  if (is({"S", "Z", "tS", "dZ"})) return Viseme::SH;
  if (is({"k", "g", "N", "h", "x"})) return Viseme::KG;
  if (is({"r", "r-", "*"})) return Viseme::R;
  if (is({"w", "W"})) return Viseme::W;
  if (is({"j"})) return Viseme::Y;
  if (is({"3:", "3", "@r"})) return Viseme::ER;
  if (is({"a", "aa", "A:", "A@", "aI", "aU", "V", "a#", "aI@", "aU@", "A"})) return Viseme::AA;
  if (is({"0", "O:", "O@", "OI", "o@", "O"})) return Viseme::OH;
  if (is({"E", "e@", "eI", "e", "@", "@2", "@5", "@-"})) return Viseme::EH;
  if (is({"I", "i:", "i", "I2", "I#", "i@", "i@3", "y"})) return Viseme::IY;
  if (is({"U", "u:", "U@", "oU", "u", "o"})) return Viseme::UW;
  switch (p[0]) {
    case 'a': case 'A': return Viseme::AA;
    case 'o': case 'O': case '0': return Viseme::OH;
    case 'e': case 'E': case '@': case '3': return Viseme::EH;
    case 'i': case 'I': return Viseme::IY;
    case 'u': case 'U': return Viseme::UW;
    default: return Viseme::TDN;
  }
}

inline bool is_bilabial(const std::string& ph) { return viseme_of(ph) == Viseme::BMP; }

/// Viseme → target speech-basis weights (jaw, round, press, stretch, upper-lip raise, funnel).
inline std::array<double, kMaxSpeechBases> viseme_target(Viseme v) {
  switch (v) {
    case Viseme::Sil: return {0, 0, 0, 0, 0, 0};
    case Viseme::BMP: return {0.05, 0, 1.0, 0, 0, 0};
    case Viseme::FV: return {0.10, 0, 0, 0.05, 0.30, 0};
    case Viseme::TH: return {0.20, 0, 0, 0.20, 0.10, 0};
    case Viseme::SZ: return {0.10, 0, 0, 0.50, 0.10, 0};
    case Viseme::TDN: return {0.22, 0, 0, 0.25, 0, 0};
    case Viseme::L: return {0.30, 0, 0, 0.10, 0, 0};
    case Viseme::SH: return {0.15, 0.55, 0, 0, 0.20, 0.50};
    case Viseme::KG: return {0.30, 0, 0, 0.10, 0, 0};
    case Viseme::R: return {0.18, 0.50, 0, 0, 0.10, 0.20};
    case Viseme::W: return {0.10, 1.00, 0, 0, 0, 0.20};
    case Viseme::Y: return {0.15, 0, 0, 0.60, 0, 0};
    case Viseme::AA: return {0.90, 0, 0, 0.10, 0.10, 0.10};
    case Viseme::EH: return {0.55, 0, 0, 0.35, 0.10, 0};
    case Viseme::IY: return {0.25, 0, 0, 0.80, 0.10, 0};
    case Viseme::UW: return {0.25, 0.90, 0, 0, 0, 0.30};
    case Viseme::OH: return {0.60, 0.60, 0, 0, 0, 0.20};
    case Viseme::ER: return {0.35, 0.35, 0, 0, 0.20, 0.10};
  }
  return {0, 0, 0, 0, 0, 0};
}

/// Dominance (coarticulation strength) of a viseme: lip-critical visemes dominate their neighbours.
inline double viseme_dominance(Viseme v) {
  switch (v) {
    case Viseme::Sil: return 0.5;
    case Viseme::BMP: return 4.0;
    case Viseme::FV: return 2.5;
    case Viseme::W: case Viseme::SH: return 1.5;
    case Viseme::AA: case Viseme::EH: case Viseme::IY: case Viseme::UW: case Viseme::OH:
    case Viseme::ER: return 1.0;
    default: return 0.8;
  }
}

namespace detail {
inline const std::vector<const char*>& random_consonants() {
  // bilabials listed twice so that every sentence has several closures
  static const std::vector<const char*> c = {"p", "b", "m", "p", "b", "m", "f", "v", "T", "D", "s", "z",
                                             "t", "d", "n", "l", "S", "tS", "dZ", "k", "g", "h", "r",
                                             "w", "j"};
  return c;
}
inline const std::vector<const char*>& random_vowels() {
  static const std::vector<const char*> v = {"a", "A:", "aI", "aU", "V", "0", "O:", "oU", "E", "eI",
                                             "@", "I", "i:", "U", "u:", "3:"};
  return v;
}
inline const std::vector<const char*>& sentence_words() {
  static const std::vector<const char*> w = {
      "maybe", "bob", "put", "my", "blue", "map", "by", "the", "big", "lamp", "mom", "paid", "for",
      "some", "apples", "people", "bring", "bread", "home", "every", "morning", "please", "move",
      "the", "boat", "pretty", "soon", "it", "was", "a", "simple", "problem", "from", "him",
      "we", "might", "keep", "both", "bottles", "in", "bags", "she", "thought", "about", "music",
      "under", "summer", "rain", "five", "brown", "puppies", "jump", "over", "rubber", "boxes",
      "nobody", "remembers", "what", "happened", "yesterday", "quiet", "water", "moves", "past",
      "broken", "bridges", "and", "my", "brother", "made", "plum", "pie", "at", "noon", "they",
      "said", "that", "old", "dogs", "sleep", "late", "on", "cold", "nights", "we", "go", "to",
      "town", "each", "day", "her", "cat", "is", "sitting", "near", "the", "window", "it", "looks",
      "like", "snow", "tonight", "who", "knows", "where", "these", "roads", "lead", "light",
      "green", "trees", "and", "tall", "grass", "Sarah", "reads", "stories", "aloud", "while",
      "Lucy", "sings", "softly"};
  return w;
}
}  // namespace detail

/// A random phoneme timeline of about `seconds` of speech: silence, CV(C) syllables (bilabials
/// frequent, at least one guaranteed), short pauses between words, silence.
inline std::vector<PhonemeSegment> random_phoneme_timeline(Rng& rng, double seconds) {
  std::vector<PhonemeSegment> out;
  double t = 0;
  auto add = [&](const std::string& ph, double dur) {
    out.push_back({ph, t, t + dur});
    t += dur;
  };
  const auto& C = detail::random_consonants();
  const auto& Vw = detail::random_vowels();
  add("_", rng.uniform(0.20, 0.35));
  const double end_speech = std::max(t + 0.5, seconds - rng.uniform(0.25, 0.40));
  bool have_bilabial = false;
  int syll_in_word = 0;
  while (t < end_speech) {
    std::string onset = C[rng.below(C.size())];
    if (!have_bilabial && t > 0.5 * end_speech) onset = "m";  // guarantee a closure
    if (rng.uniform() < 0.85) {
      add(onset, rng.uniform(0.055, 0.11));
      have_bilabial = have_bilabial || is_bilabial(onset);
    }
    add(Vw[rng.below(Vw.size())], rng.uniform(0.09, 0.20));
    if (rng.uniform() < 0.35) {
      const std::string coda = C[rng.below(C.size())];
      if (coda != "h" && coda != "w" && coda != "j") {
        add(coda, rng.uniform(0.055, 0.10));
        have_bilabial = have_bilabial || is_bilabial(coda);
      }
    }
    if (++syll_in_word >= 1 + static_cast<int>(rng.below(3))) {
      syll_in_word = 0;
      if (rng.uniform() < 0.25) add("_", rng.uniform(0.08, 0.20));
    }
  }
  add("_", rng.uniform(0.25, 0.40));
  return out;
}

/// A random English-like sentence (for espeak-ng) of `words` words, at least one with /p b m/.
inline std::string random_sentence(Rng& rng, int words) {
  const auto& W = detail::sentence_words();
  std::string s;
  bool bil = false;
  for (int i = 0; i < words; ++i) {
    std::string w = W[rng.below(W.size())];
    if (i == words - 1 && !bil) w = "maybe";
    bil = bil || w.find_first_of("pbm") != std::string::npos;
    if (i) s += ' ';
    s += w;
  }
  return s + ".";
}

/// Whether libespeak-ng is compiled in and initialises (English voice available).
inline bool espeak_available();

/// A voice of the synthesiser: an espeak-ng voice name with variant ("en+m3"), speaking rate in
/// words per minute (80–450) and base pitch (0–99; espeak-ng's default is 50).
struct EspeakVoice {
  std::string name = "en";
  int rate = 175;
  int pitch = 50;
  unsigned noise_seed = 1;  // seeds the C rand() espeak-ng takes its noise from (deterministic audio)
};

/// Audio and phoneme events of one synthesised utterance.
struct EspeakUtterance {
  std::vector<float> samples;            // mono, espeak-ng's output rate, lead/tail silence included
  int sample_rate = 0;
  std::vector<PhonemeSegment> phonemes;  // same time base as `samples` (seconds)
};

/// Synthesises `text` with `voice`: the audio (with `lead` seconds of silence before and `tail`
/// after) and the phoneme timeline whose timings come from the same synthesis (so the audio and the
/// phoneme events agree). nullopt when espeak-ng is not available or fails. The synthesiser's
/// voice and rate are restored afterwards, so espeak_phoneme_timeline() is unaffected.
inline std::optional<EspeakUtterance> espeak_synthesize(const std::string& text, const EspeakVoice& voice,
                                                        double lead = 0.25, double tail = 0.30);

/// Phoneme timeline of `text` from libespeak-ng (starting after `lead` seconds of silence and
/// followed by `tail` seconds of silence), or nullopt when espeak-ng is not available.
inline std::optional<std::vector<PhonemeSegment>> espeak_phoneme_timeline(const std::string& text,
                                                                          double lead = 0.25,
                                                                          double tail = 0.30);

#if BLENDFUSE_HAVE_ESPEAK
namespace detail {
struct EspeakState {
  std::mutex mu;
  bool ok = false;
  int sample_rate = 0;
  EspeakState() {
    const int rate = espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, nullptr,
                                       espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_DONT_EXIT);
    ok = rate > 0 && espeak_SetVoiceByName("en") == EE_OK;
    sample_rate = rate;
  }
  static EspeakState& get() {
    static EspeakState s;
    return s;
  }
};
struct EspeakEvent {
  std::string phoneme;
  int ms;
};
/// What the synth callback fills: events always, audio when `audio` is set.
struct EspeakSink {
  std::vector<EspeakEvent> events;
  std::vector<short>* audio = nullptr;
};
inline int espeak_collect(short* wav, int n, espeak_EVENT* ev) {
  if (ev && ev->user_data) {
    auto* sink = static_cast<EspeakSink*>(ev->user_data);
    if (sink->audio && wav && n > 0) sink->audio->insert(sink->audio->end(), wav, wav + n);
  }
  for (; ev && ev->type != espeakEVENT_LIST_TERMINATED; ++ev) {
    auto* sink = static_cast<EspeakSink*>(ev->user_data);
    auto* out = sink ? &sink->events : nullptr;
    if (!out) continue;
    if (ev->type == espeakEVENT_PHONEME) {
      char buf[9];
      std::memcpy(buf, ev->id.string, 8);
      buf[8] = 0;
      out->push_back({std::string(buf), ev->audio_position});
    } else if (ev->type == espeakEVENT_END || ev->type == espeakEVENT_MSG_TERMINATED) {
      out->push_back({std::string("_"), ev->audio_position});
    }
  }
  return 0;
}
inline std::optional<std::vector<PhonemeSegment>> timeline_from_events(std::vector<EspeakEvent> events,
                                                                       double lead, double tail);

/// Synthesises `text` (with `voice`, or the default English voice) in a forked child process and
/// returns its events (and audio when sink.audio is set) through a pipe. espeak-ng keeps waveform
/// state (phases, gain control, noise from rand()) across utterances and cannot be re-initialised
/// in-process, so synthesising in a child of a process that never synthesises itself makes every
/// utterance depend only on (text, voice) as long as this process has not synthesised in-process
/// (espeak_phoneme_timeline) before. Returns false when synthesis fails.
inline bool espeak_run_isolated(const std::string& text, const EspeakVoice* voice, EspeakSink& out) {
  auto& st = EspeakState::get();
  std::lock_guard<std::mutex> lock(st.mu);
  int fd[2];
  if (::pipe(fd) != 0) return false;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd[0]);
    ::close(fd[1]);
    return false;
  }
  if (pid == 0) {  // child: synthesise, serialise, exit without running atexit handlers
    ::close(fd[0]);
    std::vector<short> pcm;
    EspeakSink sink;
    sink.audio = out.audio ? &pcm : nullptr;
    bool ok = true;
    if (voice) {
      ok = espeak_SetVoiceByName(voice->name.c_str()) == EE_OK;
      espeak_SetParameter(espeakRATE, std::clamp(voice->rate, 80, 450), 0);
      espeak_SetParameter(espeakPITCH, std::clamp(voice->pitch, 0, 99), 0);
      std::srand(voice->noise_seed);
    } else {
      std::srand(1);
    }
    espeak_SetSynthCallback(espeak_collect);
    ok = ok && espeak_Synth(text.c_str(), text.size() + 1, 0, POS_CHARACTER, 0, espeakCHARS_UTF8, nullptr,
                            &sink) == EE_OK;
    ok = ok && espeak_Synchronize() == EE_OK;
    std::vector<char> buf;
    auto put = [&](const void* p, std::size_t n) {
      buf.insert(buf.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n);
    };
    const std::uint8_t flag = ok ? 1 : 0;
    put(&flag, 1);
    const std::uint64_t ne = sink.events.size(), np = pcm.size();
    put(&ne, 8);
    for (const auto& e : sink.events) {
      const std::uint8_t len = static_cast<std::uint8_t>(std::min<std::size_t>(e.phoneme.size(), 255));
      put(&len, 1);
      put(e.phoneme.data(), len);
      const std::int32_t ms = e.ms;
      put(&ms, 4);
    }
    put(&np, 8);
    if (np) put(pcm.data(), np * sizeof(short));
    std::size_t done = 0;
    while (done < buf.size()) {
      const ssize_t w = ::write(fd[1], buf.data() + done, buf.size() - done);
      if (w <= 0) ::_exit(1);
      done += static_cast<std::size_t>(w);
    }
    ::close(fd[1]);
    ::_exit(0);
  }
  ::close(fd[1]);
  std::vector<char> buf;
  char tmp[65536];
  for (;;) {
    const ssize_t r = ::read(fd[0], tmp, sizeof tmp);
    if (r > 0) buf.insert(buf.end(), tmp, tmp + r);
    else if (r == 0 || errno != EINTR) break;
  }
  ::close(fd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return false;
  std::size_t pos = 0;
  auto get = [&](void* p, std::size_t n) {
    if (pos + n > buf.size()) return false;
    std::memcpy(p, buf.data() + pos, n);
    pos += n;
    return true;
  };
  std::uint8_t flag = 0;
  std::uint64_t ne = 0, np = 0;
  if (!get(&flag, 1) || !flag || !get(&ne, 8)) return false;
  for (std::uint64_t i = 0; i < ne; ++i) {
    std::uint8_t len = 0;
    std::int32_t ms = 0;
    std::string ph;
    if (!get(&len, 1)) return false;
    ph.resize(len);
    if (!get(ph.data(), len) || !get(&ms, 4)) return false;
    out.events.push_back({ph, ms});
  }
  if (!get(&np, 8) || pos + np * sizeof(short) != buf.size()) return false;
  if (out.audio) {
    out.audio->resize(static_cast<std::size_t>(np));
    if (np) std::memcpy(out.audio->data(), buf.data() + pos, static_cast<std::size_t>(np) * sizeof(short));
  }
  return true;
}
}  // namespace detail

inline bool espeak_available() { return detail::EspeakState::get().ok; }

inline std::optional<std::vector<PhonemeSegment>> espeak_phoneme_timeline(const std::string& text,
                                                                          double lead, double tail) {
  auto& st = detail::EspeakState::get();
  if (!st.ok) return std::nullopt;
  detail::EspeakSink sink;
  {
    // In-process (event timings then depend slightly on what was synthesised before in this
    // process, as they always have; fusion datasets stay byte-identical to earlier versions).
    std::lock_guard<std::mutex> lock(st.mu);
    espeak_SetSynthCallback(detail::espeak_collect);
    const espeak_ERROR e = espeak_Synth(text.c_str(), text.size() + 1, 0, POS_CHARACTER, 0,
                                        espeakCHARS_UTF8, nullptr, &sink);
    espeak_Synchronize();
    if (e != EE_OK) return std::nullopt;
  }
  return detail::timeline_from_events(sink.events, lead, tail);
}

inline std::optional<EspeakUtterance> espeak_synthesize(const std::string& text, const EspeakVoice& voice,
                                                        double lead, double tail) {
  auto& st = detail::EspeakState::get();
  if (!st.ok) return std::nullopt;
  std::vector<short> pcm;
  detail::EspeakSink sink;
  sink.audio = &pcm;
  if (!detail::espeak_run_isolated(text, &voice, sink)) return std::nullopt;
  auto tl = detail::timeline_from_events(sink.events, lead, tail);
  if (!tl || pcm.empty()) return std::nullopt;
  EspeakUtterance u;
  u.sample_rate = st.sample_rate;
  u.phonemes = std::move(*tl);
  const auto lead_n = static_cast<std::size_t>(std::lround(lead * u.sample_rate));
  const auto total = std::max(lead_n + pcm.size(),
                              static_cast<std::size_t>(std::ceil(u.phonemes.back().end * u.sample_rate)));
  u.samples.assign(total, 0.0f);
  for (std::size_t i = 0; i < pcm.size(); ++i) u.samples[lead_n + i] = static_cast<float>(pcm[i]) / 32768.0f;
  return u;
}

namespace detail {
inline std::optional<std::vector<PhonemeSegment>> timeline_from_events(std::vector<EspeakEvent> events,
                                                                       double lead, double tail) {
  if (events.empty()) return std::nullopt;
  std::stable_sort(events.begin(), events.end(),
                   [](const auto& x, const auto& y) { return x.ms < y.ms; });
  std::vector<PhonemeSegment> out;
  out.push_back({"_", 0.0, lead});
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const double s = lead + events[i].ms / 1000.0, e = lead + events[i + 1].ms / 1000.0;
    if (e <= s) continue;
    const bool sil = viseme_of(events[i].phoneme) == Viseme::Sil;
    if (sil && viseme_of(out.back().phoneme) == Viseme::Sil && out.back().end == s) {
      out.back().end = e;  // merge consecutive pauses
    } else {
      out.push_back({sil ? std::string("_") : events[i].phoneme, s, e});
    }
  }
  const double end = lead + events.back().ms / 1000.0;
  if (out.back().phoneme == "_" && out.back().end >= end) out.back().end = end + tail;
  else out.push_back({"_", std::max(out.back().end, end), std::max(out.back().end, end) + tail});
  return out;
}
}  // namespace detail
#else
inline bool espeak_available() { return false; }
inline std::optional<std::vector<PhonemeSegment>> espeak_phoneme_timeline(const std::string&, double,
                                                                          double) {
  return std::nullopt;
}
inline std::optional<EspeakUtterance> espeak_synthesize(const std::string&, const EspeakVoice&, double,
                                                        double) {
  return std::nullopt;
}
#endif

}  // namespace blendfuse::data
