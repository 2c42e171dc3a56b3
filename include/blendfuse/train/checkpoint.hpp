// blendfuse — training checkpoints shared by the trainers: the model (its own safetensors layout
// with config metadata), the Adam state and the epoch, written atomically in one file.
#pragma once

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "blendfuse/io/safetensors.hpp"
#include "blendfuse/train/adam.hpp"

namespace blendfuse::train {

/// Writes `model` (Model::add_to), the optimiser state and the epoch counter to `path` atomically.
template <class Model, class T>
void save_checkpoint(const std::string& path, Model& model, const Adam<T>& opt, int epoch, std::uint64_t seed) {
  io::SafeTensorsWriter w;
  model.add_to(w);
  opt.save_state(w);
  w.set_metadata("train.epoch", std::to_string(epoch));
  w.set_metadata("train.seed", std::to_string(seed));
  w.save(path);
}

/// Restores a checkpoint written by save_checkpoint into `model` and `opt`; returns the epoch.
/// The checkpoint's model config must equal the model's (IoError naming the file otherwise).
/// Parameters and Adam moments are matched by parameter name (a parameter the checkpoint lacks
/// is an IoError naming it), and nothing changes unless everything is valid: the model's
/// parameters are written last, after the optimiser state and the epoch were read and checked.
/// Checkpoints of earlier versions (the same file layout, restored by position) load unchanged.
template <class Model, class T>
int load_checkpoint(const std::string& path, Model& model, Adam<T>& opt) {
  const auto f = io::SafeTensorsFile::load(path);
  auto loaded = Model::from_safetensors(f);  // validates every tensor (nn::load_parameters)
  if (loaded.config().to_json() != model.config().to_json())
    throw IoError(path, "checkpoint was made with a different model config");
  const std::string e = f.meta("train.epoch", "0");
  int epoch = 0;
  try {
    std::size_t used = 0;
    epoch = std::stoi(e, &used);
    if (used != e.size()) throw std::invalid_argument("trailing characters");
  } catch (const std::exception&) {
    throw IoError(path, "metadata 'train.epoch' is not an integer: '" + e + "'");
  }
  if (epoch < 0) throw IoError(path, "metadata 'train.epoch' is negative (" + e + ")");
  std::map<std::string, nn::Parameter<T>*> by_name;
  for (auto* p : loaded.parameters()) by_name[p->name] = p;
  const auto dst = model.parameters();
  std::vector<Tensor<T>> staged;
  staged.reserve(dst.size());
  for (const auto* p : dst) {
    const auto it = by_name.find(p->name);
    if (it == by_name.end()) throw IoError(path, "checkpoint has no parameter '" + p->name + "'");
    if (it->second->value.shape() != p->value.shape())
      throw IoError(path, "checkpoint parameter '" + p->name + "' has shape " + it->second->value.shape_string() +
                              ", the model's " + p->value.shape_string());
    staged.push_back(it->second->value.clone());
  }
  opt.load_state(f);  // all-or-nothing itself, moments keyed by parameter name
  for (std::size_t i = 0; i < dst.size(); ++i) {
    dst[i]->value = std::move(staged[i]);
    dst[i]->touch();  // caches derived from the value (frozen oneDNN weights) must refresh
  }
  return epoch;
}

/// A resumed run must not already be past the requested epochs (it would silently save the
/// checkpoint's model as the result of a shorter run).
inline void check_resume_epochs(const std::string& path, int done, int epochs) {
  if (done > epochs)
    throw IoError(path, "checkpoint has " + std::to_string(done) + " epochs done, more than the requested --epochs " +
                            std::to_string(epochs) + " (give --epochs >= " + std::to_string(done) +
                            " or another --checkpoint)");
}

/// Throws ArgumentError naming `what`, the epoch and the step when the loss is non-finite or a
/// parameter became non-finite, so training stops before anything non-finite is saved.
template <class T>
void check_finite_step(const char* what, double loss, const nn::ParamList<T>& params, int epoch, long step) {
  const std::string at = std::string(what) + ": at epoch " + std::to_string(epoch + 1) + ", step " + std::to_string(step);
  if (!std::isfinite(loss))
    throw ArgumentError(at + " the loss became non-finite (" + std::to_string(loss) +
                        "); nothing was saved for this epoch (lower --lr or the loss weights)");
  for (const auto* p : params) {
    const T* d = p->value.data();
    for (Index i = 0; i < p->value.numel(); ++i)
      if (!std::isfinite(static_cast<double>(d[i])))
        throw ArgumentError(at + " parameter '" + p->name + "' became non-finite (element " + std::to_string(i) +
                            "); nothing was saved for this epoch (lower --lr or the loss weights)");
  }
}

/// The end of an epoch, shared by the trainers: writes the checkpoint (when cfg.checkpoint is set;
/// it records the epochs completed, `epoch` included), appends `st` to `out`, calls `on_epoch`,
/// and returns true when the time budget cfg.max_seconds (> 0) is spent after `elapsed` seconds.
template <class Config, class Model, class T, class Stats>
bool finish_epoch(const Config& cfg, Model& model, const Adam<T>& opt, int epoch, const Stats& st,
                  std::vector<Stats>& out, const std::function<void(const Stats&)>& on_epoch, double elapsed) {
  if (!cfg.checkpoint.empty()) save_checkpoint(cfg.checkpoint, model, opt, epoch + 1, cfg.seed);
  out.push_back(st);
  if (on_epoch) on_epoch(st);
  return cfg.max_seconds > 0 && elapsed > cfg.max_seconds;
}

}  // namespace blendfuse::train
