#!/usr/bin/python3
"""Exports PyTorch modules as vkrnn model directories (docs/model-format.md):

    out_dir/model.json          config: the model as graphs of op nodes (format version 2),
                                special tokens, decoding settings, optional vocabularies
    out_dir/model.safetensors   the weights the graphs name (the module's parameter names;
                                F32, F16 or BF16)

Your own module (traced with torch.fx by tools/torch_graph.py):
    from export_torch import export_module
    export_module(model, "out/mine", special_tokens={"bos": 1, "eos": 2}, max_length=40)
A seq2seq module provides encode(tokens, lengths) -> (memory, state) and
step(token, state, memory) -> (logits, state[, attention]); a classifier forward(tokens,
lengths) -> logits (or a tuple / dict of outputs). Anything that cannot be mapped is an
ExportError naming the module, the operation and the source line.

The reference modules of tools/vkrnn_models.py (the four version-1 architectures):
    from export_torch import export, load_model
    export(model, "out/dates", src_vocab=chars, tgt_vocab=chars_out, tokenizer={"type": "char"})
    model, config = load_model("out/dates")
export() traces them like any module (format version 2; format_version=1 writes version 1).

CLI (random-weight models for parity tests):
    export_torch.py --architecture luong_seq2seq --random --seed 3 --out /tmp/luong \
        [--set cell=gru --set score=concat ...] [--dtype F16 | --quantize {int8,fp16}]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402
import torch_graph as tg  # noqa: E402
import vkrnn_models as vm  # noqa: E402

ExportError = tg.ExportError

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
DTYPES = ("F32", "F16", "BF16", "I8")
# --quantize's choices, as the dtype each writes (fp16 is --dtype F16 under another name).
QUANTIZE = {"int8": "I8", "fp16": "F16"}
SCALE_SUFFIX = "_scale"  # an I8 weight "<name>" has its per-row F32 scales in "<name>_scale"


def _flat_tensor_names(tensors):
    """Every tensor name the "tensors" map refers to (RNN roles are {param: name} objects)."""
    for value in tensors.values():
        if isinstance(value, dict):
            yield from value.values()
        else:
            yield value


def _check_tensor_map(config, state):
    named = list(_flat_tensor_names(config["tensors"]))
    missing = [n for n in named if n not in state]
    unused = [n for n in state if n not in set(named)]
    if missing or unused or len(named) != len(set(named)):
        raise ValueError(f"tensor map and weights disagree: missing {missing}, unused {unused}")


def _check_vocab(name, vocab, size, special):
    if vocab is None:
        raise ValueError(f"{name} is required for this architecture")
    vocab = list(vocab)
    if len(vocab) != size:
        raise ValueError(f"{name}: {len(vocab)} entries, but the model's size is {size}")
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"{name}: duplicate entries")
    if not all(isinstance(t, str) for t in vocab):
        raise ValueError(f"{name}: entries must be strings")
    for role, index in special.items():
        if not 0 <= index < size:
            raise ValueError(f"{name}: special token {role} = {index} outside [0, {size})")
    return vocab


def model_config(model, src_vocab=None, tgt_vocab=None, vocab=None, labels=None,
                 tokenizer=None, dtype="F32", extra=None):
    """The complete model.json dict for model plus its vocabularies."""
    config = {k: v for k, v in model.config().items() if v is not None}  # absent = n/a
    special = config["special_tokens"]
    if len(set(special.values())) != len(special):
        raise ValueError(f"special_tokens: each needs its own id, got {special}")
    if config["architecture"] in ("bahdanau_seq2seq", "luong_seq2seq"):
        config["src_vocab"] = _check_vocab("src_vocab", src_vocab, config["src_vocab_size"],
                                           special)
        config["tgt_vocab"] = _check_vocab("tgt_vocab", tgt_vocab, config["tgt_vocab_size"],
                                           special)
    else:
        config["vocab"] = _check_vocab("vocab", vocab, config["vocab_size"], special)
        labels = [str(i) for i in range(config["num_classes"])] if labels is None else \
            [str(x) for x in labels]
        if len(labels) != config["num_classes"]:
            raise ValueError(f"labels: {len(labels)} entries for {config['num_classes']} classes")
        config["labels"] = labels
    tok = {"type": "word", "lowercase": False, "src_append_eos": False}
    tok.update(tokenizer or {})
    if tok["type"] not in ("char", "word"):
        raise ValueError(f"tokenizer type must be 'char' or 'word', got {tok['type']!r}")
    config["tokenizer"] = tok
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    config["weights"] = WEIGHTS_FILE
    config["weights_dtype"] = dtype
    if extra:
        config["extra"] = extra
    # "tensors" last: it is long, the sizes are what a reader looks at first.
    config["tensors"] = config.pop("tensors")
    return config


def quantize_rows(a):
    """Symmetric per-row int8: scale = max|row| / 127, q = round(w / scale) (half to even, as
    vkrnn's Linear::load); a zero row gets scale 0. Returns (q int8 [N, K], scales f32 [N])."""
    a = np.asarray(a, np.float32)
    if a.ndim != 2 or not np.isfinite(a).all():
        raise ValueError(f"int8 quantization needs a finite [N, K] matrix, got shape {a.shape}")
    scales = (np.abs(a).max(axis=1, initial=0.0) / np.float32(127)).astype(np.float32)
    safe = np.where(scales == 0, np.float32(1), scales)[:, None]
    q = np.clip(np.rint(a / safe), -127, 127).astype(np.int8)
    return q, scales


def _int8_weights(graphs):
    """The tensors the graphs read as weight matrices of linear and rnn nodes (what I8
    quantizes; the rest -- biases, embeddings, attention -- stays F32)."""
    names = set()
    for g in graphs.values():
        for n in g["nodes"]:
            for slot, name in n.get("weights", {}).items():
                if (n["op"] == "linear" and slot == "weight") or (n["op"] == "rnn" and slot.startswith("weight_")):
                    names.add(name)
    return names


def _write(out_dir, config, tensors, dtype, metadata):
    """model.json and model.safetensors; tensors: name -> float tensor or array. dtype I8: the
    linear and rnn weight matrices of config["graphs"] int8 with per-row scales, every other
    tensor F32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "I8" and "graphs" not in config:
        raise ValueError("I8 (int8 weight matrices) needs format version 2")
    int8 = _int8_weights(config["graphs"]) if dtype == "I8" else set()
    out = {}
    for name, t in tensors.items():
        a = (t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)).astype(np.float32)
        if name in int8:
            out[name], out[name + SCALE_SUFFIX] = quantize_rows(a)
        elif dtype in ("F32", "I8"):
            out[name] = np.ascontiguousarray(a)
        elif dtype == "F16":
            out[name] = a.astype(np.float16)
        else:
            out[name] = st.BF16.from_float32(a)
    os.makedirs(out_dir, exist_ok=True)
    weights_path = os.path.join(out_dir, WEIGHTS_FILE)
    st.save(weights_path, out, metadata=metadata)
    os.chmod(weights_path, 0o644)  # save() writes through mkstemp, which creates mode 0600
    text = json.dumps(config, indent=1, ensure_ascii=False)
    tmp = os.path.join(out_dir, CONFIG_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, os.path.join(out_dir, CONFIG_FILE))


def _strings(name, values, size=None, unique=True):
    values = list(values)
    if not all(isinstance(t, str) for t in values):
        raise ValueError(f"{name}: entries must be strings")
    if unique and len(set(values)) != len(values):
        raise ValueError(f"{name}: duplicate entries")
    if size is not None and len(values) != size:
        raise ValueError(f"{name}: {len(values)} entries, but the model's size is {size}")
    return values


def export_module(model, out_dir, special_tokens=None, max_length=None, beam_width=1, length_alpha=0.6,
                  src_vocab=None, tgt_vocab=None, vocab=None, labels=None, tokenizer=None,
                  output_activation=None, max_positions=None, dtype="F32", extra=None, architecture="custom",
                  task=None, encode=None, step=None, forward=None):
    """Traces `model` and writes it as a version-2 model directory; returns the config.

    task: "seq2seq" (default when the module has encode and step) or "classifier".
    seq2seq: special_tokens {"bos": id, "eos": id (optional), "pad": id (optional), "unk": id
    (optional)}, max_length (decoder steps), beam_width, length_alpha; src_vocab / tgt_vocab
    (optional lists of token strings, index = id). classifier: vocab, labels (optional),
    output_activation ("softmax" / "sigmoid"; taken from a final activation of the module).
    encode / step / forward: callables (model, ...) to trace instead of the methods.
    Raises ExportError when a part of the module has no exact vkrnn equivalent."""
    model.eval()
    if task is None:
        task = "seq2seq" if hasattr(model, "encode") and hasattr(model, "step") else "classifier"
    special = dict(special_tokens or {})
    config = {"format": vm.FORMAT, "version": 2, "task": task, "architecture": architecture}
    if task == "seq2seq":
        if "bos" not in special:
            raise ValueError("special_tokens needs 'bos' (the first decoder input) for a seq2seq model")
        if not max_length:
            raise ValueError("max_length (decoder steps) is required for a seq2seq model")
        graphs, weights = tg.trace_seq2seq(model, encode or (lambda m, t, l: m.encode(t, l)),
                                           step or (lambda m, tok, st_, mem: m.step(tok, st_, mem)))
        config["special_tokens"] = special
        config["decode"] = {"max_length": int(max_length), "beam_width": int(beam_width),
                            "length_alpha": float(length_alpha)}
        if src_vocab is not None:
            config["src_vocab"] = _strings("src_vocab", src_vocab)
        if tgt_vocab is not None:
            config["tgt_vocab"] = _strings("tgt_vocab", tgt_vocab)
    elif task == "classifier":
        graphs, weights, activation = tg.trace_classifier(model, forward or (lambda m, t, l: m(t, l)))
        if special:
            config["special_tokens"] = special
        if vocab is not None:
            config["vocab"] = _strings("vocab", vocab)
        if labels is not None:
            config["labels"] = _strings("labels", [str(x) for x in labels], unique=False)
        act = output_activation or activation
        if act:
            config["output_activation"] = act
    else:
        raise ValueError(f"task must be 'seq2seq' or 'classifier', got {task!r}")
    if tokenizer:
        tok = {"type": "word", "lowercase": False, "src_append_eos": False}
        tok.update(tokenizer)
        if tok["type"] not in ("char", "word"):
            raise ValueError(f"tokenizer type must be 'char' or 'word', got {tok['type']!r}")
        config["tokenizer"] = tok
    if max_positions:
        config["max_positions"] = int(max_positions)
    config["weights"] = WEIGHTS_FILE
    config["weights_dtype"] = dtype
    if extra:
        config["extra"] = extra
    config["graphs"] = graphs
    _write(out_dir, config, weights.tensors, dtype, {"format": vm.FORMAT, "version": "2"})
    return config


def _reference_classifier_forward(m, tokens, lengths):
    r = m(tokens, lengths)
    rnn_inputs = r.rnn_inputs
    if rnn_inputs is None:  # rnn_attention_classifier: the embeddings, padding zeroed
        rnn_inputs = m.embedding(tokens) * vm.length_mask(lengths, tokens.size(1))[:, :, None]
    return {"logits": r.logits, "probs": r.probs, "pooling": r.pooling, "self_attention": r.self_attention,
            "rnn_outputs": r.rnn_outputs, "rnn_inputs": rnn_inputs}


def export(model, out_dir, src_vocab=None, tgt_vocab=None, vocab=None, labels=None,
           tokenizer=None, dtype="F32", extra=None, format_version=2):
    """Writes a reference module (tools/vkrnn_models.py) as out_dir/model.json and
    out_dir/model.safetensors; returns the config dict. Version 2 (default) traces it into
    graphs like any module and keeps its version-1 config in extra["reference_module"] (what
    load_model rebuilds it from); format_version=1 writes the fixed-architecture version 1.
    vocabularies: seq2seq models take src_vocab and tgt_vocab, classifiers vocab (+ labels);
    list index = token id. tokenizer: {"type": "char" | "word", "lowercase": bool,
    "src_append_eos": bool}. dtype: "F32" (default), "F16", "BF16" or "I8" (version 2: linear
    and rnn weight matrices int8 with per-row scales, the rest F32)."""
    v1 = model_config(model, src_vocab, tgt_vocab, vocab, labels, tokenizer, dtype, extra)
    if format_version == 1:
        state = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
        _check_tensor_map(v1, state)
        _write(out_dir, v1, state, dtype, {"format": vm.FORMAT, "version": str(vm.VERSION),
                                           "architecture": v1["architecture"]})
        return v1
    if format_version != 2:
        raise ValueError(f"format_version must be 1 or 2, got {format_version!r}")
    reference = {k: v for k, v in v1.items() if k not in ("tensors", "weights", "weights_dtype", "extra", "src_vocab",
                                                          "tgt_vocab", "vocab", "labels", "tokenizer")}
    more = dict(extra or {})
    more["reference_module"] = reference
    if isinstance(model, vm.Seq2SeqBase):
        sp = v1["special_tokens"]
        return export_module(model, out_dir, special_tokens=sp, max_length=v1["max_decode_length"],
                             beam_width=v1["beam"]["width"], length_alpha=v1["beam"]["length_alpha"],
                             src_vocab=v1["src_vocab"], tgt_vocab=v1["tgt_vocab"], tokenizer=v1["tokenizer"],
                             dtype=dtype, extra=more, architecture=v1["architecture"], task="seq2seq",
                             encode=lambda m, t, l: m.protocol_encode(t, l),
                             step=lambda m, tok, st_, mem: m.protocol_step(tok, st_, mem))
    return export_module(model, out_dir, special_tokens=v1["special_tokens"], vocab=v1["vocab"], labels=v1["labels"],
                         tokenizer=v1["tokenizer"], output_activation=v1["output_activation"],
                         max_positions=v1.get("max_positions") if v1.get("positional_encoding") else None,
                         dtype=dtype, extra=more, architecture=v1["architecture"], task="classifier",
                         forward=_reference_classifier_forward)


def load_model(model_dir):
    """(module in eval mode, config) from a model directory; F16 / BF16 weights become f32, I8
    ones (with their "_scale") q * scale."""
    with open(os.path.join(model_dir, CONFIG_FILE), encoding="utf-8") as f:
        config = json.load(f)
    tensors = st.load(os.path.join(model_dir, config.get("weights", WEIGHTS_FILE)),
                      bf16="float32")
    for name in [n for n, t in tensors.items() if np.asarray(t).dtype == np.int8]:
        scales = np.asarray(tensors.pop(name + SCALE_SUFFIX), np.float32)
        tensors[name] = np.asarray(tensors[name], np.float32) * scales[:, None]
    state = {name: torch.from_numpy(np.asarray(t, dtype=np.float32)) for name, t in tensors.items()}
    if config.get("version") == 2:
        reference = (config.get("extra") or {}).get("reference_module")
        if reference is None:
            raise ValueError(f"{model_dir}: a version-2 model of no reference module (extra.reference_module)")
        model = vm.build_from_config(reference)
        # The graphs name the module's parameters, or tensors derived from them (torch_graph.py:
        # "NAME:row" for a vector used as a one-row matrix, "NAME:T" for a transposed matrix).
        derived = {}
        for name in model.state_dict():
            if name in state:
                derived[name] = state[name]
            elif f"{name}:row" in state:
                derived[name] = state[f"{name}:row"][0]
            elif f"{name}:T" in state:
                derived[name] = state[f"{name}:T"].t().contiguous()
        state = derived
    else:
        model = vm.build_from_config(config)
        _check_tensor_map(config, state)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, config


# --- random-weight models ------------------------------------------------------------------------

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def random_vocab(size, prefix):
    return SPECIALS + [f"{prefix}{i}" for i in range(size - len(SPECIALS))]


# Small default sizes per architecture (constructor keyword arguments).
DEFAULTS = {
    "bahdanau_seq2seq": dict(src_vocab_size=13, tgt_vocab_size=11, embedding_dim=8,
                             encoder_hidden=12, decoder_hidden=10, attention_dim=9,
                             encoder_layers=1, cell="gru", max_decode_length=8),
    "luong_seq2seq": dict(src_vocab_size=13, tgt_vocab_size=11, embedding_dim=8, hidden=10,
                          layers=2, cell="lstm", score="general", input_feeding=True,
                          max_decode_length=8),
    "rnn_attention_classifier": dict(vocab_size=17, num_classes=3, embedding_dim=8, hidden=10,
                                     layers=1, bidirectional=True, cell="lstm",
                                     pooling_score="tanh", attention_dim=7,
                                     output_activation="softmax"),
    "self_attention_rnn": dict(vocab_size=17, num_classes=2, embedding_dim=8, heads=2,
                               attention_projections=True, positional_encoding=True,
                               residual=True, hidden=10, layers=1, bidirectional=False,
                               cell="gru", pooling="last", output_activation="softmax",
                               max_positions=64),
}


def randomize(model, seed, scale=0.5):
    """Deterministic random weights: U(-scale, scale) everywhere, N(0, 1) embeddings (pad row
    included). Larger than PyTorch's defaults so that argmax / beam decisions have margins."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * scale)
    return model


def random_model(architecture, seed, scale=0.5, **overrides):
    """(model, vocab kwargs for export) of one architecture with random weights."""
    if architecture not in DEFAULTS:
        raise ValueError(f"unknown architecture {architecture!r} (known: {', '.join(DEFAULTS)})")
    kwargs = {**DEFAULTS[architecture], **overrides}
    model = vm.ARCHITECTURES[architecture](**kwargs)
    randomize(model, seed, scale)
    model.eval()
    if architecture in ("bahdanau_seq2seq", "luong_seq2seq"):
        vocabs = dict(src_vocab=random_vocab(kwargs["src_vocab_size"], "s"),
                      tgt_vocab=random_vocab(kwargs["tgt_vocab_size"], "t"))
    else:
        vocabs = dict(vocab=random_vocab(kwargs["vocab_size"], "w"),
                      labels=[f"class{i}" for i in range(kwargs["num_classes"])])
    return model, vocabs


def _parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--architecture", required=True, choices=sorted(DEFAULTS))
    ap.add_argument("--random", action="store_true", required=True,
                    help="random weights (the only model this CLI builds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=0.5, help="weights ~ U(-scale, scale)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="constructor argument override, VALUE as JSON (e.g. --set layers=2)")
    ap.add_argument("--dtype", default="F32", choices=DTYPES)
    ap.add_argument("--quantize", choices=sorted(QUANTIZE),
                    help="int8: linear and rnn weight matrices I8 with per-row F32 scales (<name>_scale), the rest F32 "
                         "(same as --dtype I8); fp16: every tensor F16 (same as --dtype F16)")
    ap.add_argument("--out", required=True, help="output model directory")
    ap.add_argument("--format-version", type=int, default=2, choices=(1, 2),
                    help="2: graphs (default); 1: the fixed architecture")
    args = ap.parse_args(argv)
    if args.quantize:
        if args.dtype not in ("F32", QUANTIZE[args.quantize]):
            ap.error(f"--quantize {args.quantize} and --dtype {args.dtype} disagree")
        args.dtype = QUANTIZE[args.quantize]
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set wants KEY=VALUE, got {item!r}")
        overrides[key] = _parse_value(value)
    model, vocabs = random_model(args.architecture, args.seed, args.scale, **overrides)
    config = export(model, args.out, dtype=args.dtype, format_version=args.format_version, **vocabs)
    print(f"wrote {args.out}/{CONFIG_FILE} and {WEIGHTS_FILE} "
          f"({config['architecture']}, format version {config['version']}, "
          f"{sum(p.numel() for p in model.parameters())} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
