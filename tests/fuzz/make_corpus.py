#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets (tests/fuzz/README.md).

From the shipped models (samples/*/model, format version 1) and, when present, the fixture
directories given (tools/make_model_fixtures.py: every architecture, mostly version 2;
tools/make_graph_fixtures.py: users' own modules as version-2 graphs), writes OUT/<target>/<sha1>
for the targets below. The shipped models go in twice: shrunk (their config, vocabularies,
tokenizer and tensor map, with every layer 2 wide and random weights, exported as version 1 and
as version 2: a few KB, so the fuzzer runs at thousands of inputs per second; needs torch) into
OUT/<target>/, and whole (725 KB and 93 KB) into OUT/<target>-full/, which the regression
test runs once but the fuzzer does not mutate.

  safetensors  every weights file (and the fixtures' expected.safetensors)
  model        u32 little-endian len(model.json) | model.json | model.safetensors
  tokenizer    flags byte | vocabulary entries joined by '\\n' | '\\n\\n' | a text
               (flags: bit 0 word tokenizer, 1 lowercase, 2 append EOS, 3 unknown -> error)

A new target (e.g. another file format) adds its writer here and one vkrnn_fuzz_target()
line in tests/fuzz/CMakeLists.txt.
"""
import argparse
import hashlib
import json
import pathlib
import struct
import sys
import tempfile

SPECIALS = 4  # <pad> <s> </s> <unk> lead every exported vocabulary (the target adds them back)


def write(out, target, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def tokenizer_seeds(config, texts):
    tok = config.get("tokenizer", {})
    flags = (1 if tok.get("type") == "word" else 0) | (2 if tok.get("lowercase") else 0) | \
            (4 if tok.get("src_append_eos") else 0)
    for key in ("src_vocab", "vocab", "tgt_vocab"):
        vocab = config.get(key)
        if not isinstance(vocab, list):
            continue
        entries = "\n".join(str(v) for v in vocab[SPECIALS:]).encode()
        for text in (texts or ["a"])[:4]:  # a few texts per vocabulary are enough to seed
            for policy in (0, 8):
                yield bytes([flags | policy]) + entries + b"\n\n" + text.encode()


# Sizes set to 2 in the shrunk copies of the shipped models (heads to 1: it must divide E).
SHRINK = {"embedding_dim": 2, "encoder_hidden": 2, "decoder_hidden": 2, "hidden": 2, "attention_dim": 2,
          "heads": 1}


def shrunk(source, model_dir, out_dir, format_version):
    """model_dir's model re-exported with 2-wide layers and random weights (None without torch)."""
    sys.path.insert(0, str(source / "tools"))
    try:
        import export_torch as et
    except ImportError as e:
        print(f"make_corpus: no shrunk copy of {model_dir} ({e})")
        return None
    config = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    arch = config["architecture"]
    kwargs = {k: config[k] for k in et.DEFAULTS[arch] if k in config}
    kwargs.update({k: v for k, v in SHRINK.items() if k in kwargs})
    model, _ = et.random_model(arch, 1, **kwargs)
    vocabs = {k: config[k] for k in ("src_vocab", "tgt_vocab", "vocab", "labels") if k in config}
    et.export(model, str(out_dir), tokenizer=config["tokenizer"], format_version=format_version, **vocabs)
    return out_dir


def heldout_texts(model_dir):
    heldout = model_dir.parent / "heldout.txt"
    if not heldout.exists():
        return []
    lines = heldout.read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[0] for line in lines[:8] if line]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, type=pathlib.Path, help="the vkrnn checkout")
    ap.add_argument("--fixtures", type=pathlib.Path, action="append", default=[],
                    help="a fixtures directory of model directories (optional, repeatable)")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    args = ap.parse_args()

    shipped = sorted(p.parent for p in (args.source / "samples").glob("*/model/model.json"))
    if not shipped:
        sys.exit(f"make_corpus: no shipped models under {args.source / 'samples'}")
    tmp = tempfile.TemporaryDirectory()
    # (model directory, target suffix, texts for the tokenizer seeds)
    model_dirs = [(d, "-full", heldout_texts(d)) for d in shipped]
    for i, d in enumerate(shipped):
        for version in (1, 2):
            small = shrunk(args.source, d, pathlib.Path(tmp.name) / f"{i}-v{version}", version)
            if small:
                model_dirs.append((small, "", []))
    for fixtures in args.fixtures:
        if fixtures.is_dir():
            model_dirs += [(p.parent, "", []) for p in sorted(fixtures.glob("*/model.json"))]

    for target in ("safetensors", "model", "tokenizer"):  # every directory the tests name exists
        for suffix in ("", "-full"):
            (args.out / (target + suffix)).mkdir(parents=True, exist_ok=True)
    for d, suffix, texts in model_dirs:
        config_text = (d / "model.json").read_bytes()
        config = json.loads(config_text)
        weights = (d / config.get("weights", "model.safetensors")).read_bytes()
        seeds = [("safetensors", weights), ("model", struct.pack("<I", len(config_text)) + config_text + weights)]
        expected = d / "expected.safetensors"
        if expected.exists():
            seeds.append(("safetensors", expected.read_bytes()))
        seeds = [(target + suffix, data) for target, data in seeds]
        seeds += [("tokenizer", s) for s in tokenizer_seeds(config, texts)]
        for target, data in seeds:
            write(args.out, target, data)
    counts = {d.name: len(list(d.iterdir())) for d in sorted(args.out.iterdir())}
    print("make_corpus: " + ", ".join(f"{t} {n}" for t, n in counts.items()) +
          f" seeds from {len(model_dirs)} model directories into {args.out}")


if __name__ == "__main__":
    main()
