#!/usr/bin/python3
"""Writes parity fixtures for the C++ model loaders: for each case, a random-weight model
directory (model.json + model.safetensors, docs/model-format.md) and expected.safetensors with
inputs and the reference module's outputs. Small and deterministic: CI regenerates them on
every run (a few seconds, < 1 MB in all).

    make_model_fixtures.py --out build/model-fixtures [--only NAME ...] [--list]

Layout: OUT/index.json lists the cases ({name, architecture, weights_dtype, format_version,
description}); OUT/<name>/ holds model.json (format version 2: graphs traced from the module),
model.safetensors and expected.safetensors; the cases of V1_CASES also as OUT/<name>_v1/ in
format version 1. Expected values are computed from the
model as reloaded from its own files (so F16 / BF16 cases compare against the rounded weights).

expected.safetensors, seq2seq cases (B rows, S source steps, V target vocab, T = decode steps):
    src I32 [B, S] (pad beyond the length), src_lengths I32 [B]
    encoder_outputs F32 [B, S, M] (zero beyond the length), keys F32 [B, S, A] (additive/concat)
    decoder_init_h F32 [L, B, H] (+ decoder_init_c for LSTM)
    tgt_in I32 [B, Tt] (BOS + random tokens), teacher_logits F32 [B, Tt, V],
    teacher_attention F32 [B, Tt, S]                         teacher forcing
    greedy_tokens I32 [B, T], greedy_lengths I32 [B], greedy_logits F32 [B, T, V],
    greedy_attention F32 [B, T, S], greedy_margin F32 [B, T] (top-1 minus top-2 logit; 0 after
    the row's EOS)                                           greedy, stop at EOS
    fixed_tokens I32 [B, N], fixed_logits [B, N, V], fixed_attention [B, N, S]
                                                             greedy, no early stop, N = max_len
    beam_count I32 [B] (hypotheses kept, <= K), beam_tokens I32 [B, K, N] (pad-filled),
    beam_lengths I32 [B, K], beam_finished I32 [B, K], beam_scores F32 [B, K],
    beam_norm_scores F32 [B, K], beam_best_logits F32 [B, N, V], beam_best_attention F32
    [B, N, S] (best hypothesis, zero past its length)        beam search, K = 3
    rules_greedy_tokens, rules_greedy_lengths, rules_greedy_logits (processed),
    rules_beam_count, rules_beam_tokens, rules_beam_lengths, rules_beam_finished,
    rules_beam_scores, rules_beam_norm_scores                greedy (stop at EOS) and beam
                                                             search with RULES (DecodeRules)
    search_beam_count, ... search_beam_norm_scores           beam search with SEARCH (patience,
                                                             coverage penalty)
  metadata: case, max_len, beam_width, length_alpha, rules_repetition_penalty,
    rules_no_repeat_ngram_size, rules_min_length, search_patience, search_coverage_penalty
classifier cases:
    tokens I32 [B, S], lengths I32 [B], logits F32 [B, C], probs F32 [B, C],
    rnn_inputs F32 [B, S, E] (self_attention_rnn: the RNN's input y), rnn_outputs F32 [B, S, D*H],
    pooling F32 [B, S] (attention pooling only), self_attention F32 [B, heads, S, S]
    (self_attention_rnn only; rows and columns past the length are zero)
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
    from torch_required import require_torch
    require_torch("make_model_fixtures")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import export_torch  # noqa: E402
import safetensors_io as st  # noqa: E402
import vkrnn_models as vm  # noqa: E402

BEAM_WIDTH = 3
# Decoding rules (vkrnn_models.DecodeRules: CTranslate2's repetition_penalty,
# no_repeat_ngram_size, min_decoding_length) for the rules_* references.
RULES = dict(repetition_penalty=1.5, no_repeat_ngram_size=2, min_length=3)
# Beam search options for the search_* references: a patience factor and Wu et al.'s coverage
# penalty.
SEARCH = dict(patience=2.0, coverage_penalty=0.4)
LENGTHS = [9, 1, 6, 3]  # batch of 4: full, length 1, and two in between (S = 9)

# name -> (architecture, constructor overrides, export dtype, description)
CASES = {
    "bahdanau_gru": ("bahdanau_seq2seq", {}, "F32", "1-layer bi-GRU encoder, GRU decoder"),
    "bahdanau_lstm_2layer": ("bahdanau_seq2seq", dict(cell="lstm", encoder_layers=2), "F32",
                             "2-layer bi-LSTM encoder, LSTM decoder (c0 = 0)"),
    "bahdanau_gru_f16": ("bahdanau_seq2seq", dict(attention_dim=16), "F16",
                         "as bahdanau_gru, F16 weights"),
    "bahdanau_gru_i8": ("bahdanau_seq2seq", dict(attention_dim=16), "I8",
                        "as bahdanau_gru, int8 linear and GRU weight matrices (per-row scales), the rest F32"),
    "luong_lstm_dot_feed_2layer": ("luong_seq2seq", dict(cell="lstm", score="dot",
                                                         input_feeding=True, layers=2), "F32",
                                   "LSTM, dot score, input feeding, 2 layers"),
    "luong_lstm_general_feed": ("luong_seq2seq", dict(cell="lstm", score="general",
                                                      input_feeding=True, layers=1), "F32",
                                "LSTM, general score, input feeding"),
    "luong_lstm_concat_nofeed": ("luong_seq2seq", dict(cell="lstm", score="concat",
                                                       input_feeding=False, layers=1,
                                                       attention_dim=7), "F32",
                                 "LSTM, concat score, no input feeding"),
    "luong_gru_dot_nofeed": ("luong_seq2seq", dict(cell="gru", score="dot",
                                                   input_feeding=False, layers=1), "F32",
                             "GRU, dot score, no input feeding"),
    "luong_gru_general_nofeed_2layer": ("luong_seq2seq", dict(cell="gru", score="general",
                                                              input_feeding=False, layers=2),
                                        "BF16", "GRU, general score, 2 layers, BF16 weights"),
    "luong_gru_concat_feed": ("luong_seq2seq", dict(cell="gru", score="concat",
                                                    input_feeding=True, layers=1,
                                                    attention_dim=5), "F32",
                              "GRU, concat score, input feeding"),
    # 12 wide: the attention reads its query, the top layer's h, in place as vec4s (10-wide
    # layers read it as floats).
    "luong_gru_dot_feed_2layer_h12": ("luong_seq2seq", dict(cell="gru", score="dot",
                                                            input_feeding=True, layers=2,
                                                            hidden=12), "F32",
                                      "GRU, dot score, input feeding, 2 layers of 12"),
    "luong_lstm_general_2layer_h12": ("luong_seq2seq", dict(cell="lstm", score="general",
                                                            input_feeding=False, layers=2,
                                                            hidden=12), "F32",
                                      "LSTM, general score, 2 layers of 12"),
    "classifier_lstm_bi_tanh_softmax": ("rnn_attention_classifier",
                                        dict(cell="lstm", bidirectional=True,
                                             pooling_score="tanh", output_activation="softmax",
                                             num_classes=3), "F32",
                                        "bi-LSTM, tanh pooling score, softmax over 3"),
    "classifier_gru_linear_sigmoid": ("rnn_attention_classifier",
                                      dict(cell="gru", bidirectional=False,
                                           pooling_score="linear", output_activation="sigmoid",
                                           num_classes=1), "F32",
                                      "GRU, linear pooling score, sigmoid (binary)"),
    "classifier_lstm_bi_2layer_sigmoid2": ("rnn_attention_classifier",
                                           dict(cell="lstm", bidirectional=True, layers=2,
                                                pooling_score="linear",
                                                output_activation="sigmoid", num_classes=2),
                                           "F32", "2-layer bi-LSTM, sigmoid multi-label (2)"),
    "classifier_gru_bi_tanh_2layer": ("rnn_attention_classifier",
                                      dict(cell="gru", bidirectional=True, layers=2,
                                           pooling_score="tanh", output_activation="softmax",
                                           num_classes=2), "F32",
                                      "2-layer bi-GRU, tanh pooling, softmax over 2"),
    "selfattn_gru_pe_res_proj2_last": ("self_attention_rnn",
                                       dict(cell="gru", heads=2, attention_projections=True,
                                            positional_encoding=True, residual=True,
                                            pooling="last", bidirectional=False), "F32",
                                       "PE, 2-head projected attention, residual, GRU, last"),
    "selfattn_lstm_identity_bi_last": ("self_attention_rnn",
                                       dict(cell="lstm", heads=1, attention_projections=False,
                                            positional_encoding=False, residual=False,
                                            pooling="last", bidirectional=True), "F32",
                                       "no PE, identity attention, no residual, bi-LSTM, last"),
    "selfattn_lstm_pe_res_identity2_attnpool": ("self_attention_rnn",
                                                dict(cell="lstm", heads=2,
                                                     attention_projections=False,
                                                     positional_encoding=True, residual=True,
                                                     pooling="attention", pooling_score="tanh",
                                                     attention_dim=6, bidirectional=False,
                                                     output_activation="sigmoid",
                                                     num_classes=1), "F32",
                                                "PE, 2-head identity attention, residual, "
                                                "LSTM, tanh attention pooling, sigmoid"),
    "selfattn_gru_proj1_bi_linearpool_2layer": ("self_attention_rnn",
                                                dict(cell="gru", heads=1,
                                                     attention_projections=True,
                                                     positional_encoding=False, residual=True,
                                                     pooling="attention",
                                                     pooling_score="linear", layers=2,
                                                     bidirectional=True, num_classes=3), "F32",
                                                "projected attention, residual, 2-layer bi-GRU, "
                                                "linear attention pooling, softmax over 3"),
}


# Also written in format version 1 ("<name>_v1": the same model and expected values), so that
# vkrnn's conversion of version-1 files is checked against PyTorch for every architecture.
V1_CASES = ("bahdanau_lstm_2layer", "luong_lstm_dot_feed_2layer", "luong_gru_concat_feed",
            "classifier_lstm_bi_tanh_softmax", "selfattn_gru_pe_res_proj2_last",
            "selfattn_lstm_pe_res_identity2_attnpool")


def i32(t):
    return np.ascontiguousarray(torch.as_tensor(t).numpy().astype(np.int32))


def f32(t):
    return np.ascontiguousarray(torch.as_tensor(t).detach().numpy().astype(np.float32))


def random_tokens(gen, lengths, vocab, low, pad):
    """[B, S] ids in [low, vocab) up to each length, pad after."""
    steps = max(lengths)
    tokens = torch.randint(low, vocab, (len(lengths), steps), generator=gen)
    mask = vm.length_mask(torch.tensor(lengths), steps)
    return torch.where(mask, tokens, torch.full_like(tokens, pad))


def greedy_margin(logits, lengths):
    top2 = torch.topk(logits, 2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    return torch.where(vm.length_mask(lengths, logits.size(1)), margin, torch.zeros_like(margin))


def beam_arrays(beams, k, max_len, pad, prefix):
    """Hypotheses of every row as fixed-shape arrays: {prefix}count [B], tokens [B, k, N]
    (pad-filled), lengths, finished [B, k], scores, norm_scores [B, k]."""
    batch = len(beams)
    tokens = np.full((batch, k, max_len), pad, np.int32)
    blen = np.zeros((batch, k), np.int32)
    bfin = np.zeros((batch, k), np.int32)
    scores = np.zeros((batch, k), np.float32)
    norm = np.zeros((batch, k), np.float32)
    for b, hyps in enumerate(beams):
        for j, h in enumerate(hyps):
            tokens[b, j, : len(h.tokens)] = h.tokens
            blen[b, j], bfin[b, j] = len(h.tokens), int(h.finished)
            scores[b, j], norm[b, j] = h.score, h.norm_score
    out = dict(count=np.array([len(h) for h in beams], np.int32), tokens=tokens, lengths=blen,
               finished=bfin, scores=scores, norm_scores=norm)
    return {prefix + name: v for name, v in out.items()}


def seq2seq_expected(model, gen):
    c = model.config()
    sp = c["special_tokens"]
    max_len = c["max_decode_length"]
    lengths = torch.tensor(LENGTHS)
    src = random_tokens(gen, LENGTHS, c["src_vocab_size"], sp["unk"], sp["pad"])
    out = {"src": i32(src), "src_lengths": i32(lengths)}
    with torch.no_grad():
        memory = model.encode(src, lengths)
        out["encoder_outputs"] = f32(memory["memory"])
        if "keys" in memory:
            out["keys"] = f32(memory["keys"])
        out["decoder_init_h"] = f32(memory["state"][0])
        if c["cell"] == "lstm":
            out["decoder_init_c"] = f32(memory["state"][1])
        tgt_in = torch.randint(sp["unk"] + 1, c["tgt_vocab_size"], (len(LENGTHS), 5),
                               generator=gen)
        tgt_in[:, 0] = sp["bos"]
        logits, attn = model(src, lengths, tgt_in)
        out.update(tgt_in=i32(tgt_in), teacher_logits=f32(logits), teacher_attention=f32(attn))
    g = model.greedy_decode(src, lengths, max_len)
    out.update(greedy_tokens=i32(g.tokens), greedy_lengths=i32(g.lengths),
               greedy_logits=f32(g.logits), greedy_attention=f32(g.attention),
               greedy_margin=f32(greedy_margin(g.logits, g.lengths)))
    fixed = model.greedy_decode(src, lengths, max_len, stop_at_eos=False)
    out.update(fixed_tokens=i32(fixed.tokens), fixed_logits=f32(fixed.logits),
               fixed_attention=f32(fixed.attention))
    beams = model.beam_decode(src, lengths, max_len, BEAM_WIDTH)
    batch, vocab, steps = len(LENGTHS), c["tgt_vocab_size"], src.size(1)
    best_logits = np.zeros((batch, max_len, vocab), np.float32)
    best_attn = np.zeros((batch, max_len, steps), np.float32)
    for b, hyps in enumerate(beams):
        best = hyps[0]
        best_logits[b, : len(best.tokens)] = f32(best.logits)
        best_attn[b, : len(best.tokens)] = f32(best.attention)
    out.update(beam_arrays(beams, BEAM_WIDTH, max_len, sp["pad"], "beam_"),
               beam_best_logits=best_logits, beam_best_attention=best_attn)
    # The same decodes under the decoding rules.
    rules = vm.DecodeRules(**RULES, eos=sp["eos"])
    rg = model.greedy_decode(src, lengths, max_len, rules=rules)
    rb = model.beam_decode(src, lengths, max_len, BEAM_WIDTH, rules=rules)
    out.update(rules_greedy_tokens=i32(rg.tokens), rules_greedy_lengths=i32(rg.lengths),
               rules_greedy_logits=f32(rg.logits))
    out.update(beam_arrays(rb, BEAM_WIDTH, max_len, sp["pad"], "rules_beam_"))
    sb = model.beam_decode(src, lengths, max_len, BEAM_WIDTH, **SEARCH)
    out.update(beam_arrays(sb, BEAM_WIDTH, max_len, sp["pad"], "search_beam_"))
    meta = {"max_len": str(max_len), "beam_width": str(BEAM_WIDTH),
            "length_alpha": repr(float(model.length_alpha)),
            **{"rules_" + k: str(v) for k, v in RULES.items()},
            **{"search_" + k: repr(float(v)) for k, v in SEARCH.items()}}
    # What makes the case useful: early EOS and full-length rows, decisive argmaxes (with the
    # rules too), and beam hypotheses that finished.
    glen = g.lengths.tolist()
    rmargin = greedy_margin(rg.logits, rg.lengths)
    quality = (min(glen) < max_len and max(glen) == max_len
               and float(out["greedy_margin"][out["greedy_margin"] > 0].min()) > 1e-3
               and float(rmargin[rmargin > 0].min()) > 1e-3
               and int(out["beam_finished"].sum()) > 0)
    return out, meta, quality


def classifier_expected(model, gen):
    c = model.config()
    sp = c["special_tokens"]
    lengths = torch.tensor(LENGTHS)
    tokens = random_tokens(gen, LENGTHS, c["vocab_size"], sp["unk"], sp["pad"])
    with torch.no_grad():
        r = model(tokens, lengths)
    out = {"tokens": i32(tokens), "lengths": i32(lengths), "logits": f32(r.logits),
           "probs": f32(r.probs), "rnn_outputs": f32(r.rnn_outputs)}
    if r.rnn_inputs is not None:
        out["rnn_inputs"] = f32(r.rnn_inputs)
    if r.pooling is not None:
        out["pooling"] = f32(r.pooling)
    if r.self_attention is not None:
        out["self_attention"] = f32(r.self_attention)
    return out, {}, True


def make_case(name, out_dir, seed):
    architecture, overrides, dtype, description = CASES[name]
    case_dir = os.path.join(out_dir, name)
    seq2seq = architecture in ("bahdanau_seq2seq", "luong_seq2seq")
    # Seq2seq: try successive seeds until the case exercises EOS handling with clear margins.
    for attempt in range(50):
        model, vocabs = export_torch.random_model(architecture, seed + attempt, **overrides)
        if seq2seq:
            with torch.no_grad():  # make EOS likely enough that some rows stop early
                model.output.bias[model.eos_id] += 0.7
        export_torch.export(model, case_dir, dtype=dtype, **vocabs)
        model, _ = export_torch.load_model(case_dir)
        gen = torch.Generator().manual_seed(seed + attempt)
        fn = seq2seq_expected if seq2seq else classifier_expected
        expected, meta, ok = fn(model, gen)
        if ok:
            break
    else:
        raise RuntimeError(f"{name}: no seed in 50 gives a useful fixture")
    meta.update(case=name, architecture=architecture, seed=str(seed + attempt))
    st.save(os.path.join(case_dir, "expected.safetensors"), expected, metadata=meta)
    entries = [{"name": name, "architecture": architecture, "weights_dtype": dtype,
                "format_version": 2, "description": description}]
    if name in V1_CASES:
        v1_dir = case_dir + "_v1"
        export_torch.export(model, v1_dir, dtype=dtype, format_version=1, **vocabs)
        st.save(os.path.join(v1_dir, "expected.safetensors"), expected, metadata=meta)
        entries.append({**entries[0], "name": name + "_v1", "format_version": 1,
                        "description": description + " (format version 1)"})
    return entries


def fixture_main(argv, doc, cases, default_seed, list_line, make_case, what, index_fields=None):
    """The fixture scripts' command line: --out DIR [--only NAME ...] [--list] [--seed N].
    make_case(name, out_dir, seed) returns the case's index entries (a list)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--seed", type=int, default=default_seed)
    args = ap.parse_args(argv)
    if args.list:
        for name, case in cases.items():
            print(list_line(name, case))
        return 0
    if not args.out:
        ap.error("--out is required")
    names = args.only or list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; --list shows them")
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    # A case's seed depends on its place in the cases only, so --only reproduces the full run.
    index = [entry for name in names
             for entry in make_case(name, args.out, args.seed + 100 * list(cases).index(name))]
    with open(os.path.join(args.out, "index.json"), "w", encoding="utf-8") as f:
        json.dump({**(index_fields or {}), "cases": index}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(index)} {what} to {args.out}")
    return 0


def main(argv=None):
    return fixture_main(argv, __doc__, CASES, 100,
                        lambda name, c: f"{name:42s} {c[0]:26s} {c[2]:4s} {c[3]}", make_case, "model fixtures",
                        {"format": vm.FORMAT, "version": vm.VERSION})


if __name__ == "__main__":
    sys.exit(main())
