#!/usr/bin/python3
"""Exports a tools/vkrnn_models.py module as a vkrnn model directory (docs/model-format.md):

    out_dir/model.json          config: architecture, sizes, special tokens, vocabularies,
                                tokenizer, and "tensors" (role -> tensor name)
    out_dir/model.safetensors   the module's state_dict, names unchanged (F32, F16 or BF16)

Python use:
    from export_torch import export, load_model
    export(model, "out/dates", src_vocab=chars, tgt_vocab=chars_out, tokenizer={"type": "char"})
    model, config = load_model("out/dates")

CLI (random-weight models for parity tests):
    export_torch.py --architecture luong_seq2seq --random --seed 3 --out /tmp/luong \
        [--set cell=gru --set score=concat ...] [--dtype F16]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402
import vkrnn_models as vm  # noqa: E402

CONFIG_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
DTYPES = ("F32", "F16", "BF16")


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


def export(model, out_dir, src_vocab=None, tgt_vocab=None, vocab=None, labels=None,
           tokenizer=None, dtype="F32", extra=None):
    """Writes out_dir/model.json and out_dir/model.safetensors; returns the config dict.
    vocabularies: seq2seq models take src_vocab and tgt_vocab, classifiers vocab (+ labels);
    list index = token id. tokenizer: {"type": "char" | "word", "lowercase": bool,
    "src_append_eos": bool}. dtype: "F32" (default), "F16" or "BF16"."""
    config = model_config(model, src_vocab, tgt_vocab, vocab, labels, tokenizer, dtype, extra)
    state = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    _check_tensor_map(config, state)
    tensors = {}
    for name, t in state.items():
        if dtype == "F32":
            tensors[name] = t.numpy()
        elif dtype == "F16":
            tensors[name] = t.numpy().astype(np.float16)
        else:
            tensors[name] = st.BF16.from_float32(t.numpy())
    os.makedirs(out_dir, exist_ok=True)
    weights_path = os.path.join(out_dir, WEIGHTS_FILE)
    st.save(weights_path, tensors, metadata={"format": vm.FORMAT, "version": str(vm.VERSION),
                                             "architecture": config["architecture"]})
    os.chmod(weights_path, 0o644)  # save() writes through mkstemp, which creates mode 0600
    text = json.dumps(config, indent=1, ensure_ascii=False)
    tmp = os.path.join(out_dir, CONFIG_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(tmp, os.path.join(out_dir, CONFIG_FILE))
    return config


def load_model(model_dir):
    """(module in eval mode, config) from a model directory; F16 / BF16 weights become f32."""
    with open(os.path.join(model_dir, CONFIG_FILE), encoding="utf-8") as f:
        config = json.load(f)
    model = vm.build_from_config(config)
    tensors = st.load(os.path.join(model_dir, config.get("weights", WEIGHTS_FILE)),
                      bf16="float32")
    state = {name: torch.from_numpy(np.asarray(t, dtype=np.float32)) for name, t in tensors.items()}
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
    ap.add_argument("--out", required=True, help="output model directory")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set wants KEY=VALUE, got {item!r}")
        overrides[key] = _parse_value(value)
    model, vocabs = random_model(args.architecture, args.seed, args.scale, **overrides)
    config = export(model, args.out, dtype=args.dtype, **vocabs)
    print(f"wrote {args.out}/{CONFIG_FILE} and {WEIGHTS_FILE} "
          f"({config['architecture']}, {sum(p.numel() for p in model.parameters())} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
