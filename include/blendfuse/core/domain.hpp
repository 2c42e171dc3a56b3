// blendfuse — the two domains of the paper, one enum for the whole library.
//
// Speech (VOCAset-like: talking) and expression (Florence4D-like: emotions). The dataset loader
// (data::Dataset::sequences), the procedural generator (data::ProceduralSequence::kind) and the
// fusion module (nn::DeformationFusionModule::encode/train_batch, whose encoders are indexed by
// the value: Speech = 0, Expression = 1) all use this type; data::Domain and nn::Domain name it.
#pragma once

namespace blendfuse {

enum class Domain { Speech = 0, Expression = 1 };

/// "speech" / "expression".
inline const char* domain_name(Domain d) { return d == Domain::Speech ? "speech" : "expression"; }

namespace data {
using blendfuse::Domain;
}  // namespace data
namespace nn {
using blendfuse::Domain;
using blendfuse::domain_name;
}  // namespace nn

}  // namespace blendfuse
