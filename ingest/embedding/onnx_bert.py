"""A BERT encoder written straight into an ONNX graph of onnxruntime's fused operators.

For BERT-architecture sentence-transformers models (all-MiniLM-L6-v2, the
bundled default, is one), ``ingest.embedding.onnx_export`` builds the graph here from the
safetensors weights instead of tracing torch: every layer is one ``Attention``
(QKV projection, masked softmax, context), a ``MatMul`` + ``SkipLayerNormalization``,
and the FFN as ``MatMul`` + ``BiasGelu`` + ``MatMul`` + ``SkipLayerNormalization``,
after one ``EmbedLayerNormalization``. The torch exporter's graph has onnxruntime's
attention fusion fail on it, and the fused ``Attention`` is what lets the int8
graph quantize the QKV projection as one ``QAttention``.

**Outlier channels.** BERT has a few activation channels several times larger
than all the rest, on the ``[CLS]`` token: in all-MiniLM-L6-v2, hidden channel
99 (and 223 in later layers) reaches 12-30 where the other channels stay under
6-11, and one or two FFN (GELU output) channels in each of layers 0-3 reach
14-24 against 5. Dynamic int8 quantizes an activation with one scale per batch,
so those few values made the scale several times coarser for every other value:
that is why the FFN down-projections had to stay fp32. Here, the channels are
found on calibration text at build time and computed apart in fp32 (the
LLM.int8() decomposition, with the channels fixed):

- an FFN channel: its up-projection column, GELU and down-projection row become
  small side ``MatMul`` s whose result joins the residual;
- a hidden channel at the FFN's input: masked to zero in the int8 up-projection,
  and added back as a rank-k fp32 ``MatMul`` of those channels.

Measured on 256 SciFact abstracts (mean cosine to fp32), every weight MatMul
int8: 0.9950 with no split, 0.9971 with the FFN channels apart, 0.9980 with both
(the recipe-3 graph, three down-projections fp32: 0.9973). The fp32 graph
computes exactly what the model computes either way.

Only right-padded batches are supported: the mask becomes one length per row
(``ingest.embedding.onnx`` pads on the right).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Name suffixes of the side MatMuls that carry the outlier channels; they stay fp32.
OUTLIER_NODE_SUFFIXES = ("_outlier_up", "_outlier_down", "_outlier_in_up")
#: A channel is an outlier when its calibrated peak exceeds this many times the
#: 99th percentile of the layer's channel peaks (all-MiniLM-L6-v2: 2.7-5x for the
#: [CLS] channels, under 1.8x for every other channel).
OUTLIER_FACTOR = 2.0
#: At most this many channels per layer are taken apart (a model past that is
#: not the pattern this handles, and its int8 graph is simply less exact).
MAX_OUTLIERS = 8
#: Calibration text for the activation peaks. The outliers sit on [CLS], so any
#: text shows them; these vary length, domain and language a little.
CALIBRATION_TEXTS = (
    "hello",
    "The quarterly report shows revenue up 12 % on the previous year, driven by "
    "enterprise subscriptions in Europe and North America.",
    "To reset your password, open Settings, choose Security, and follow the link "
    "sent to your registered e-mail address.",
    "Mitochondrial DNA mutations accumulate with age in human skeletal muscle and "
    "clonal expansion of deletions leads to respiratory chain deficiency.",
    "def add(a, b):\n    return a + b",
    "Invoice 2024-0113: 3 x widgets at $19.99, VAT 20 %, total $71.96.",
    "Le comité a approuvé le budget; la réunion suivante aura lieu en mars.",
    "Employees may carry over up to five days of unused annual leave into the "
    "next calendar year, subject to their manager's approval. " * 4,
)

_MS = "com.microsoft"


def supports(model_dir: Path) -> str | None:
    """None if ``model_dir`` is a BERT this builder handles, else why not."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"config.json unreadable: {exc}"
    checks = {
        "model_type": (config.get("model_type"), "bert"),
        "hidden_act": (config.get("hidden_act"), "gelu"),
        "position_embedding_type": (config.get("position_embedding_type", "absolute"),
                                    "absolute"),
    }
    for key, (value, wanted) in checks.items():
        if value != wanted:
            return f"{key} is {value!r}, not {wanted!r}"
    if not list(model_dir.glob("*.safetensors")):
        return "no safetensors weights"
    return None


def build_bert_graph(model_dir: Path, tokenizer: Any) -> tuple[Any, dict[str, list[int]]]:
    """The fp32 ``onnx.ModelProto`` of the encoder in ``model_dir``, and its outliers.

    Inputs ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64,
    batch x sequence, right-padded); output ``last_hidden_state``. ``tokenizer``
    (the model's) encodes the calibration text.
    """
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    weights = _load_weights(model_dir)
    plain = _graph(config, weights, outliers={}, expose_activations=True)
    outliers = find_outliers(plain, tokenizer, int(config["num_hidden_layers"]))
    return _graph(config, weights, outliers=outliers, expose_activations=False), outliers


def find_outliers(model: Any, tokenizer: Any, layers: int) -> dict[str, list[int]]:
    """Per calibrated tensor (``calibrated``), the channels whose peak on the
    calibration text is an outlier; tensors without one are left out."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = calibrated(layers)
    enc = tokenizer(list(CALIBRATION_TEXTS), truncation=True, max_length=256, padding=True,
                    return_tensors="np")
    mask = enc["attention_mask"].astype(bool)
    feed = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
    feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
    out: dict[str, list[int]] = {}
    for name, value in zip(names, session.run(names, feed), strict=True):
        peak = np.abs(value[mask]).max(axis=0)
        bound = OUTLIER_FACTOR * float(np.percentile(peak, 99))
        channels = [int(c) for c in np.argsort(-peak)[:MAX_OUTLIERS] if peak[c] > bound]
        if channels:
            out[name] = sorted(channels)
    return out


def _activation(layer: int) -> str:
    return f"l{layer}_ffn_act"


def calibrated(layers: int) -> list[str]:
    """The tensors whose outlier channels are computed apart: per layer, the FFN's
    input (the attention block's layer-norm output) and its GELU output."""
    return [name for i in range(layers) for name in (f"l{i}_ln1", _activation(i))]


def _load_weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    weights: dict[str, np.ndarray] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        for name, tensor in load_file(str(path)).items():
            weights[name.removeprefix("bert.")] = tensor.astype(np.float32)
    return weights


class _Builder:
    """Collects the initializers and nodes of the graph, in insertion order."""

    def __init__(self, w: dict[str, np.ndarray]) -> None:
        self.w = w
        self.initializers: list[Any] = []
        self.nodes: list[Any] = []

    def weight(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, *, ms: bool = False,
             **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output,
                                           domain=_MS if ms else "", **attrs))
        return output

    def embeddings(self, eps: float) -> str:
        from onnx import TensorProto, helper

        for name in ("input_ids", "token_type_ids", "attention_mask"):
            self.node("Cast", [name], f"{name}_int32", to=TensorProto.INT32)
        w, e = self.w, "embeddings."
        self.nodes.append(helper.make_node(
            "EmbedLayerNormalization",
            ["input_ids_int32", "token_type_ids_int32",
             self.weight("word_embeddings", w[e + "word_embeddings.weight"]),
             self.weight("position_embeddings", w[e + "position_embeddings.weight"]),
             self.weight("token_type_embeddings", w[e + "token_type_embeddings.weight"]),
             self.weight("embeddings_ln_gamma", w[e + "LayerNorm.weight"]),
             self.weight("embeddings_ln_beta", w[e + "LayerNorm.bias"]),
             "attention_mask_int32"],
            ["embeddings", "mask_index"], name="embeddings", domain=_MS, epsilon=eps,
        ))
        return "embeddings"

    def attention(self, i: int, x: str, *, heads: int, eps: float) -> str:
        """Fused self-attention, output projection and the first layer norm."""
        w, a = self.w, f"encoder.layer.{i}.attention."
        qkv_w = np.concatenate(
            [w[f"{a}self.{k}.weight"].T for k in ("query", "key", "value")], axis=1)
        qkv_b = np.concatenate([w[f"{a}self.{k}.bias"] for k in ("query", "key", "value")])
        ctx = self.node("Attention", [x, self.weight(f"l{i}_qkv_w", qkv_w),
                                      self.weight(f"l{i}_qkv_b", qkv_b), "mask_index"],
                        f"l{i}_attention", ms=True, num_heads=heads)
        proj = self.node("MatMul", [ctx, self.weight(f"l{i}_attn_out_w",
                                                     w[f"{a}output.dense.weight"].T)],
                         f"l{i}_attn_out")
        gamma = self.weight(f"l{i}_ln1_gamma", w[f"{a}output.LayerNorm.weight"])
        beta = self.weight(f"l{i}_ln1_beta", w[f"{a}output.LayerNorm.bias"])
        bias = self.weight(f"l{i}_attn_out_b", w[f"{a}output.dense.bias"])
        return self.node("SkipLayerNormalization", [proj, x, gamma, beta, bias], f"l{i}_ln1",
                         ms=True, epsilon=eps)

    def feed_forward(self, i: int, h1: str, out: str, *, outliers: dict[str, list[int]],
                     hidden: int, eps: float) -> str:
        """The FFN with its outlier channels computed apart in fp32, then the
        second layer norm (named ``out``)."""
        w, p = self.w, f"encoder.layer.{i}."
        up_w, up_b = w[f"{p}intermediate.dense.weight"].T, w[f"{p}intermediate.dense.bias"]
        down_w = w[f"{p}output.dense.weight"].T
        apart = outliers.get(_activation(i), [])
        kept = np.setdiff1d(np.arange(up_w.shape[1]), apart)
        skip = h1
        if apart:
            side = self.node("MatMul", [h1, self.weight(f"l{i}_outlier_up_w", up_w[:, apart])],
                             f"l{i}_outlier_up")
            side = self.node("BiasGelu", [side, self.weight(f"l{i}_outlier_up_b", up_b[apart])],
                             f"l{i}_outlier_act", ms=True)
            side = self.node("MatMul",
                             [side, self.weight(f"l{i}_outlier_down_w", down_w[apart])],
                             f"l{i}_outlier_down")
            skip = self.node("Add", [h1, side], f"l{i}_outlier_sum")
        up = self._up(i, h1, up_w, kept, outliers.get(f"l{i}_ln1", []), hidden)
        act = self.node("BiasGelu", [up, self.weight(f"l{i}_ffn_up_b", up_b[kept])],
                        _activation(i), ms=True)
        down = self.node("MatMul", [act, self.weight(f"l{i}_ffn_down_w", down_w[kept])],
                         f"l{i}_ffn_down")
        gamma = self.weight(f"l{i}_ln2_gamma", w[f"{p}output.LayerNorm.weight"])
        beta = self.weight(f"l{i}_ln2_beta", w[f"{p}output.LayerNorm.bias"])
        bias = self.weight(f"l{i}_ffn_down_b", w[f"{p}output.dense.bias"])
        return self.node("SkipLayerNormalization", [down, skip, gamma, beta, bias], out,
                         ms=True, epsilon=eps)

    def _up(self, i: int, h1: str, up_w: np.ndarray, kept: np.ndarray, up_in: list[int],
            hidden: int) -> str:
        """The FFN up-projection; FFN-input outlier channels apart when found."""
        if not up_in:
            return self.node("MatMul", [h1, self.weight(f"l{i}_ffn_up_w", up_w[:, kept])],
                             f"l{i}_ffn_up")
        keep_in = np.ones(hidden, dtype=np.float32)
        keep_in[up_in] = 0.0
        masked = self.node("Mul", [h1, self.weight(f"l{i}_inlier_mask", keep_in)],
                           f"l{i}_inliers")
        main = self.node("MatMul", [masked, self.weight(f"l{i}_ffn_up_w", up_w[:, kept])],
                         f"l{i}_ffn_up_main")
        index = self.weight(f"l{i}_outlier_in_idx", np.asarray(up_in))
        side = self.node("Gather", [h1, index], f"l{i}_outlier_in", axis=2)
        side = self.node("MatMul", [side, self.weight(f"l{i}_outlier_in_w",
                                                      up_w[up_in][:, kept])],
                         f"l{i}_outlier_in_up")
        return self.node("Add", [main, side], f"l{i}_ffn_up")


def _graph(
    config: dict[str, Any],
    w: dict[str, np.ndarray],
    *,
    outliers: dict[str, list[int]],
    expose_activations: bool,
) -> Any:
    from onnx import TensorProto, helper

    eps = float(config.get("layer_norm_eps", 1e-12))
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    build = _Builder(w)
    x = build.embeddings(eps)
    layers = int(config["num_hidden_layers"])
    for i in range(layers):
        h1 = build.attention(i, x, heads=heads, eps=eps)
        out = "last_hidden_state" if i == layers - 1 else f"l{i}_ln2"
        x = build.feed_forward(i, h1, out, outliers=outliers, hidden=hidden, eps=eps)

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch", "sequence", hidden])]
    if expose_activations:
        outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                    for name in calibrated(layers)]
    graph = helper.make_graph(build.nodes, "bert_encoder", inputs, outputs, build.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid(_MS, 1)])
    model.ir_version = 9
    return model
