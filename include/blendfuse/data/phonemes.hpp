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
  EspeakState() {
    const int rate = espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, nullptr,
                                       espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_DONT_EXIT);
    ok = rate > 0 && espeak_SetVoiceByName("en") == EE_OK;
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
inline int espeak_collect(short*, int, espeak_EVENT* ev) {
  for (; ev && ev->type != espeakEVENT_LIST_TERMINATED; ++ev) {
    auto* out = static_cast<std::vector<EspeakEvent>*>(ev->user_data);
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
}  // namespace detail

inline bool espeak_available() { return detail::EspeakState::get().ok; }

inline std::optional<std::vector<PhonemeSegment>> espeak_phoneme_timeline(const std::string& text,
                                                                          double lead, double tail) {
  auto& st = detail::EspeakState::get();
  if (!st.ok) return std::nullopt;
  std::vector<detail::EspeakEvent> events;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    espeak_SetSynthCallback(detail::espeak_collect);
    const espeak_ERROR e = espeak_Synth(text.c_str(), text.size() + 1, 0, POS_CHARACTER, 0,
                                        espeakCHARS_UTF8, nullptr, &events);
    espeak_Synchronize();
    if (e != EE_OK) return std::nullopt;
  }
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
#else
inline bool espeak_available() { return false; }
inline std::optional<std::vector<PhonemeSegment>> espeak_phoneme_timeline(const std::string&, double,
                                                                          double) {
  return std::nullopt;
}
#endif

}  // namespace blendfuse::data
