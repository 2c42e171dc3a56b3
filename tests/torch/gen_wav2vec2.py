"""PyTorch (torchaudio) reference vectors for include/blendfuse/nn/wav2vec2.hpp -> wav2vec2.safetensors.

A small wav2vec 2.0 of the base architecture ("group" norm extractor, post-norm transformer with the
encoder LayerNorm before the layers) built with torchaudio.models.wav2vec2_model, random weights
(fixed seed), eval mode, evaluated in float64 from float32-rounded weights.

Stored tensors (all F32 to keep the file small):
  weights   under torchaudio's state_dict names (encoder.transformer.pos_conv_embed.conv.weight_g/_v:
            torchaudio 0.13 uses nn.utils.weight_norm(dim=2), not a parametrization)
  audio     (1, 1600) raw 16 kHz audio (0.1 s), not normalised
  features  (1, T, 32) conv feature extractor output, from the audio normalised as
            Wav2Vec2FeatureExtractor(do_normalize=True): (x - mean) / sqrt(var + 1e-7), biased var
  hidden    (1, T, 48) last hidden state
  grad.<name>   dL/d<parameter> for L = sum(hidden * R)
  grad.projected  dL/dprojected, projected = the feature projection output (1, T, 48)
  grad.encoder.transformer.pos_conv_embed.conv.weight_v.out0_4   dL/dweight_v[0:4]
R is not stored: R[i] = sin(0.5 + 0.37 i) over the flat row-major index i of hidden.
The model configuration (Hugging Face config.json keys) is in the metadata under "config".
"""
import math
import os

import torch
import torchaudio

import stio

CONV = [(32, 10, 5), (32, 3, 2), (32, 2, 2)]
EMBED, HEADS, LAYERS, FF, POS_K, POS_G = 48, 4, 2, 96, 16, 4
GRADS = [
    "encoder.transformer.layers.1.attention.q_proj.weight",
    "encoder.transformer.layers.0.attention.v_proj.bias",
    "encoder.transformer.layers.0.feed_forward.intermediate_dense.bias",
    "encoder.transformer.layers.0.final_layer_norm.weight",
    "encoder.transformer.layers.1.layer_norm.bias",
    "encoder.transformer.layer_norm.weight",
    "encoder.transformer.pos_conv_embed.conv.weight_g",
    "encoder.transformer.pos_conv_embed.conv.bias",
    "encoder.feature_projection.projection.weight",
    "encoder.feature_projection.layer_norm.bias",
]


def _model():
    return torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=CONV, extractor_conv_bias=False,
        encoder_embed_dim=EMBED, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=POS_K,
        encoder_pos_conv_groups=POS_G, encoder_num_layers=LAYERS, encoder_num_heads=HEADS,
        encoder_attention_dropout=0.0, encoder_ff_interm_features=FF, encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)


def _randomise(model):
    """Deterministic random weights (float32-representable) in sorted name order."""
    sd = model.state_dict()
    new = {}
    for name in sorted(sd):
        shape = sd[name].shape
        if name.endswith("weight_g"):
            t = 1.7 * (1.0 + 0.2 * torch.randn(shape))
        elif name.endswith("weight_v"):
            t = torch.randn(shape)
        elif "norm" in name and name.endswith(".weight"):
            t = 1.0 + 0.1 * torch.randn(shape)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape)
        else:  # conv / linear weights: unit-variance outputs
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape) / math.sqrt(fan_in)
        new[name] = t.float()
    model.load_state_dict(new)
    return new


def config():
    return {
        "conv_dim": [c for c, _, _ in CONV], "conv_kernel": [k for _, k, _ in CONV],
        "conv_stride": [s for _, _, s in CONV], "conv_bias": False, "feat_extract_norm": "group",
        "hidden_size": EMBED, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": FF, "num_conv_pos_embeddings": POS_K,
        "num_conv_pos_embedding_groups": POS_G, "layer_norm_eps": 1e-5, "do_stable_layer_norm": False,
        "hidden_act": "gelu", "do_normalize": True,
    }


def generate(outdir):
    model = _model()
    weights = _randomise(model)
    model = model.double().eval()
    L = 1600
    t = torch.arange(L, dtype=torch.float64) / 16000.0
    audio = (0.03 * torch.randn(1, L, dtype=torch.float64) + 0.2 * torch.sin(2 * math.pi * 220 * t)
             + 0.01).float()
    x = audio.double()
    x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + 1e-7)

    feats, _ = model.feature_extractor(x, None)
    projected = model.encoder.feature_projection(feats.detach())
    projected.retain_grad()
    hidden = model.encoder.transformer(projected, None)
    R = torch.sin(0.5 + 0.37 * torch.arange(hidden.numel(), dtype=torch.float64)).reshape(hidden.shape)
    (hidden * R).sum().backward()

    # sanity: the split evaluation equals the full model
    full, _ = model(x)
    assert torch.allclose(full, hidden, rtol=0, atol=1e-12)

    params = dict(model.named_parameters())
    out = dict(weights)
    out["audio"] = audio
    out["features"] = feats.detach().float()
    out["hidden"] = hidden.detach().float()
    out["grad.projected"] = projected.grad.float()
    for name in GRADS:
        out["grad." + name] = params[name].grad.float()
    wv = "encoder.transformer.pos_conv_embed.conv.weight_v"
    out["grad." + wv + ".out0_4"] = params[wv].grad[0:4].float()
    stio.save(os.path.join(outdir, "wav2vec2.safetensors"), out, {"config": config()})
