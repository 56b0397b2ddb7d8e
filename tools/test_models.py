#!/usr/bin/python3
"""Tests of the PyTorch side of the model pipeline (tools/vkrnn_models.py, export_torch.py,
make_model_fixtures.py, the sample generators and the committed sample models).

    /usr/bin/python3 tools/test_models.py [-v]        (ctest: python_models)
"""

import datetime
import math
import json
import os
import random
import re
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import numpy as np
    import torch
except ImportError as e:  # ctest reports exit code 77 as skipped (SKIP_RETURN_CODE)
    if os.environ.get("VKRNN_REQUIRE_TORCH") == "1":
        sys.exit(f"test_models: VKRNN_REQUIRE_TORCH=1 but torch cannot be imported ({e})")
    print(f"test_models: skipped, torch cannot be imported ({e}); install python3-torch")
    sys.exit(77)

ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import export_torch  # noqa: E402
import make_model_fixtures  # noqa: E402
import safetensors_io as st  # noqa: E402
import train_dates  # noqa: E402
import train_sentiment  # noqa: E402
import vkrnn_models as vm  # noqa: E402

torch.set_num_threads(1)

SEQ2SEQ_VARIANTS = [
    ("bahdanau_seq2seq", dict(cell="gru")),
    ("bahdanau_seq2seq", dict(cell="lstm", encoder_layers=2)),
    ("luong_seq2seq", dict(cell="lstm", score="dot", input_feeding=True, layers=2)),
    ("luong_seq2seq", dict(cell="lstm", score="general", input_feeding=False)),
    ("luong_seq2seq", dict(cell="gru", score="concat", input_feeding=True, attention_dim=6)),
    ("luong_seq2seq", dict(cell="gru", score="general", input_feeding=True)),
]
CLASSIFIER_VARIANTS = [
    ("rnn_attention_classifier", dict(cell="lstm", bidirectional=True, pooling_score="tanh")),
    ("rnn_attention_classifier", dict(cell="gru", bidirectional=False, layers=2,
                                      pooling_score="linear", output_activation="sigmoid",
                                      num_classes=1)),
    ("self_attention_rnn", dict(cell="gru", heads=2, pooling="last")),
    ("self_attention_rnn", dict(cell="lstm", heads=1, attention_projections=False,
                                positional_encoding=False, residual=False, bidirectional=True,
                                pooling="attention", pooling_score="tanh", attention_dim=5)),
]
LENGTHS = torch.tensor([7, 1, 4, 6])


def batch_for(model, seed, lengths=LENGTHS, pad_fill=None):
    """Random tokens up to each length; pad (or pad_fill, to test masking) after."""
    c = model.config()
    vocab = c.get("src_vocab_size", c.get("vocab_size"))
    gen = torch.Generator().manual_seed(seed)
    steps = int(lengths.max())
    tokens = torch.randint(3, vocab, (len(lengths), steps), generator=gen)
    fill = c["special_tokens"]["pad"] if pad_fill is None else pad_fill
    mask = vm.length_mask(lengths, steps)
    return torch.where(mask, tokens, torch.full_like(tokens, fill))


def random_model(arch, seed, **kw):
    """A random-weight model; seq2seq models get the smallest EOS logit boost (of a fixed
    list) that makes greedy decoding of batch_for(model, seed) stop some rows early and run
    others to 7 steps, so that EOS handling is exercised."""
    model, vocabs = export_torch.random_model(arch, seed, **kw)
    if arch in ("bahdanau_seq2seq", "luong_seq2seq"):
        src = batch_for(model, seed)
        for boost in [0.1 * i for i in range(30)]:
            trial, _ = export_torch.random_model(arch, seed, **kw)
            with torch.no_grad():
                trial.output.bias[trial.eos_id] += boost
            lengths = trial.greedy_decode(src, LENGTHS, 7).lengths
            if int(lengths.min()) < 7 and int(lengths.max()) == 7:
                return trial, vocabs
    return model, vocabs


class ExportTest(unittest.TestCase):
    def test_round_trip_f32_is_bit_exact(self):
        for i, (arch, kw) in enumerate(SEQ2SEQ_VARIANTS + CLASSIFIER_VARIANTS):
            with self.subTest(arch=arch, kw=kw), tempfile.TemporaryDirectory() as d:
                model, vocabs = random_model(arch, i, **kw)
                config = export_torch.export(model, d, **vocabs)
                loaded, config2 = export_torch.load_model(d)
                self.assertEqual(config, config2)
                a, b = model.state_dict(), loaded.state_dict()
                self.assertEqual(list(a), list(b))
                for name in a:
                    self.assertTrue(torch.equal(a[name], b[name]), name)
                # The config rebuilds the same module: the same outputs, bit for bit.
                tokens = batch_for(model, i)
                if arch.endswith("seq2seq"):
                    r1 = model.greedy_decode(tokens, LENGTHS, 6)
                    r2 = loaded.greedy_decode(tokens, LENGTHS, 6)
                    self.assertTrue(torch.equal(r1.logits, r2.logits))
                else:
                    with torch.no_grad():
                        self.assertTrue(torch.equal(model(tokens, LENGTHS).logits,
                                                    loaded(tokens, LENGTHS).logits))

    def test_tensor_map_names_every_weight_once(self):
        for i, (arch, kw) in enumerate(SEQ2SEQ_VARIANTS + CLASSIFIER_VARIANTS):
            with self.subTest(arch=arch, kw=kw), tempfile.TemporaryDirectory() as d:
                model, vocabs = random_model(arch, i, **kw)
                config = export_torch.export(model, d, format_version=1, **vocabs)
                names = list(export_torch._flat_tensor_names(config["tensors"]))
                stored = st.load(os.path.join(d, "model.safetensors"))
                self.assertEqual(sorted(names), sorted(stored))
                self.assertEqual(len(names), len(set(names)))
                for name, t in stored.items():
                    self.assertEqual(t.dtype, np.float32, name)
                # RNN roles map torch's parameter names (what the C++ Rnn::load takes).
                for role, value in config["tensors"].items():
                    if isinstance(value, dict):
                        for param, name in value.items():
                            self.assertRegex(param, r"^(weight|bias)_(ih|hh)_l\d+(_reverse)?$")
                            self.assertTrue(name.endswith("." + param), (role, name))

    def test_graphs_name_every_weight(self):
        """Version 2: the file holds exactly the tensors some node names: the module's
        parameters by their state_dict names, or tensors derived from one ("NAME:row")."""
        for i, (arch, kw) in enumerate(SEQ2SEQ_VARIANTS + CLASSIFIER_VARIANTS):
            with self.subTest(arch=arch, kw=kw), tempfile.TemporaryDirectory() as d:
                model, vocabs = random_model(arch, i, **kw)
                config = export_torch.export(model, d, **vocabs)
                self.assertEqual(config["version"], 2)
                named = {w for g in config["graphs"].values() for n in g["nodes"] for w in n.get("weights", {}).values()}
                stored = st.load(os.path.join(d, "model.safetensors"))
                self.assertEqual(sorted(named), sorted(stored))
                params = set(model.state_dict())
                for name in named:
                    self.assertIn(name.split(":")[0], params, name)
                for g in config["graphs"].values():
                    for n in g["nodes"]:
                        if n["op"] == "rnn":
                            for slot, name in n["weights"].items():
                                self.assertRegex(slot, r"^(weight|bias)_(ih|hh)_l\d+(_reverse)?$")
                                self.assertTrue(name.endswith("." + slot), (slot, name))

    def test_half_precision_exports_round_the_weights(self):
        model, vocabs = random_model("luong_seq2seq", 5, cell="gru", score="general")
        state = model.state_dict()
        for dtype in ("F16", "BF16"):
            with self.subTest(dtype=dtype), tempfile.TemporaryDirectory() as d:
                export_torch.export(model, d, dtype=dtype, **vocabs)
                stored = st.load(os.path.join(d, "model.safetensors"))
                loaded, config = export_torch.load_model(d)
                self.assertEqual(config["weights_dtype"], dtype)
                for name, t in loaded.state_dict().items():
                    ref = state[name]
                    if dtype == "F16":
                        self.assertEqual(stored[name].dtype, np.float16)
                        want = ref.half().float()
                    else:
                        self.assertIsInstance(stored[name], st.BF16)
                        want = torch.from_numpy(
                            st.BF16.from_float32(ref.numpy()).to_float32())
                    self.assertTrue(torch.equal(t, want), name)

    def test_int8_export_quantizes_the_weight_matrices_per_row(self):
        model, vocabs = random_model("luong_seq2seq", 5, cell="gru", score="general")
        state = model.state_dict()
        with tempfile.TemporaryDirectory() as d:
            config = export_torch.export(model, d, dtype="I8", **vocabs)
            self.assertEqual(config["weights_dtype"], "I8")
            stored = st.load(os.path.join(d, "model.safetensors"))
            linear = export_torch._int8_weights(config["graphs"])
            # The dense layers' and both GRUs' matrices; no bias, embedding or attention tensor.
            self.assertTrue(any(".weight_hh_l0" in n for n in linear), linear)
            self.assertTrue(any(".weight_ih_l0" in n for n in linear), linear)
            self.assertFalse(any("bias" in n or "embedding" in n for n in linear), linear)
            self.assertTrue(any(n.endswith("weight") for n in linear), linear)
            loaded, _ = export_torch.load_model(d)
            for name in stored:
                if name.endswith(export_torch.SCALE_SUFFIX):
                    self.assertIn(name[:-len(export_torch.SCALE_SUFFIX)], linear)
                    continue
                if name not in linear:
                    self.assertEqual(stored[name].dtype, np.float32, name)
                    continue
                q, scale = stored[name], stored[name + export_torch.SCALE_SUFFIX]
                self.assertEqual(q.dtype, np.int8, name)
                self.assertEqual(scale.dtype, np.float32, name)
                self.assertEqual(scale.shape, (q.shape[0],), name)
                ref = state[name.split(":")[0]].numpy()
                ref = ref.T if name.endswith(":T") else ref
                np.testing.assert_array_equal(scale, np.abs(ref).max(axis=1) / np.float32(127))
                self.assertLessEqual(np.abs(q.astype(np.float32) * scale[:, None] - ref).max(),
                                     0.5001 * scale.max())
                self.assertEqual(np.abs(q).max(), 127, name)
            # load_model dequantizes: the linear weights are q * scale, the rest unchanged.
            for name, t in loaded.state_dict().items():
                if name in linear:
                    want = stored[name].astype(np.float32) * stored[name + "_scale"][:, None]
                    np.testing.assert_array_equal(t.numpy(), want)
                elif name in stored:
                    self.assertTrue(torch.equal(t, state[name]), name)
        with self.assertRaisesRegex(ValueError, "format version 2"):
            with tempfile.TemporaryDirectory() as d:
                export_torch.export(model, d, dtype="I8", format_version=1, **vocabs)

    def test_quantize_flag_is_the_dtype_alias(self):
        for flag, dtype in (("int8", "I8"), ("fp16", "F16")):
            with self.subTest(flag=flag), tempfile.TemporaryDirectory() as d:
                export_torch.main(["--architecture", "bahdanau_seq2seq", "--random", "--quantize", flag,
                                   "--out", d, "--set", "attention_dim=8"])
                with open(os.path.join(d, "model.json"), encoding="utf-8") as f:
                    self.assertEqual(json.load(f)["weights_dtype"], dtype)
        with tempfile.TemporaryDirectory() as d, self.assertRaises(SystemExit):
            export_torch.main(["--architecture", "bahdanau_seq2seq", "--random", "--quantize", "int8",
                               "--dtype", "F16", "--out", d])

    def test_config_fields(self):
        model, vocabs = random_model("bahdanau_seq2seq", 1)
        with tempfile.TemporaryDirectory() as d:
            export_torch.export(model, d, **vocabs)
            with open(os.path.join(d, "model.json")) as f:
                config = json.load(f)
        self.assertEqual((config["format"], config["version"], config["task"]), ("vkrnn-model", 2, "seq2seq"))
        self.assertEqual(config["architecture"], "bahdanau_seq2seq")
        self.assertEqual(config["special_tokens"], {"pad": 0, "bos": 1, "eos": 2, "unk": 3})
        self.assertEqual(config["decode"], {"max_length": 8, "beam_width": 3, "length_alpha": vm.DEFAULT_LENGTH_ALPHA})
        self.assertEqual(set(config["graphs"]), {"encoder", "decoder_step"})
        self.assertEqual(config["extra"]["reference_module"]["decoder_hidden"], 10)
        with tempfile.TemporaryDirectory() as d:
            export_torch.export(model, d, format_version=1, **vocabs)
            with open(os.path.join(d, "model.json")) as f:
                config = json.load(f)
        self.assertEqual((config["format"], config["version"]), ("vkrnn-model", 1))
        self.assertEqual(config["score"], "additive")
        self.assertEqual(config["special_tokens"], {"pad": 0, "bos": 1, "eos": 2, "unk": 3})
        self.assertEqual(len(config["src_vocab"]), config["src_vocab_size"])
        self.assertEqual(config["beam"]["length_alpha"], vm.DEFAULT_LENGTH_ALPHA)

    def test_bad_configs_are_rejected(self):
        model, vocabs = random_model("luong_seq2seq", 1)
        config = export_torch.model_config(model, **vocabs)
        for key, value, message in [("version", 2, "version"), ("format", "x", "format"),
                                    ("architecture", "transformer", "architecture")]:
            with self.subTest(key=key):
                with self.assertRaisesRegex(ValueError, message):
                    vm.build_from_config({**config, key: value})
        with self.assertRaisesRegex(ValueError, "tgt_vocab"):
            export_torch.model_config(model, src_vocab=vocabs["src_vocab"],
                                      tgt_vocab=vocabs["tgt_vocab"][:-1])
        with self.assertRaisesRegex(ValueError, "src_lengths"):
            model.greedy_decode(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 3]))


class Seq2SeqTest(unittest.TestCase):
    def test_greedy_equals_teacher_forced_argmax_path(self):
        early = 0
        for i, (arch, kw) in enumerate(SEQ2SEQ_VARIANTS):
            with self.subTest(arch=arch, kw=kw):
                model, _ = random_model(arch, 10 + i, **kw)
                src = batch_for(model, 10 + i)
                g = model.greedy_decode(src, LENGTHS, 7)
                self.assertGreater(g.lengths.max(), 2)
                early += int((g.lengths < 7).sum())
                bos = torch.full((len(LENGTHS), 1), model.bos_id)
                tgt_in = torch.cat([bos, g.tokens[:, :-1]], 1)
                with torch.no_grad():
                    logits, attn = model(src, LENGTHS, tgt_in)
                valid = vm.length_mask(g.lengths, g.tokens.size(1))
                self.assertTrue(torch.equal(logits.argmax(-1)[valid], g.tokens[valid]))
                torch.testing.assert_close(logits[valid], g.logits[valid], rtol=0, atol=1e-5)
                torch.testing.assert_close(attn[valid], g.attention[valid], rtol=0, atol=1e-6)
                # Past each row's EOS: pad tokens, zero logits and attention.
                self.assertTrue(bool((g.tokens[~valid] == model.pad_id).all()))
                self.assertEqual(float(g.logits[~valid].abs().sum()), 0.0)
                for b, n in enumerate(g.lengths.tolist()):
                    if n < g.tokens.size(1) or g.tokens[b, n - 1] == model.eos_id:
                        self.assertEqual(int(g.tokens[b, n - 1]), model.eos_id)
        self.assertGreater(early, 3)  # the EOS paths were exercised

    def test_fixed_length_decode_runs_max_len_steps(self):
        model, _ = random_model("bahdanau_seq2seq", 3)
        src = batch_for(model, 3)
        fixed = model.greedy_decode(src, LENGTHS, 9, stop_at_eos=False)
        self.assertEqual(tuple(fixed.tokens.shape), (len(LENGTHS), 9))
        self.assertTrue(torch.equal(fixed.tokens, fixed.logits.argmax(-1)))
        g = model.greedy_decode(src, LENGTHS, 9)
        valid = vm.length_mask(g.lengths, g.tokens.size(1))
        self.assertTrue(torch.equal(fixed.tokens[:, : g.tokens.size(1)][valid], g.tokens[valid]))

    def test_beam_width_one_equals_greedy(self):
        for i, (arch, kw) in enumerate(SEQ2SEQ_VARIANTS):
            for seed in range(3):
                with self.subTest(arch=arch, kw=kw, seed=seed):
                    model, _ = random_model(arch, 20 + 3 * i + seed, **kw)
                    src = batch_for(model, seed)
                    g = model.greedy_decode(src, LENGTHS, 8)
                    beams = model.beam_decode(src, LENGTHS, 8, beam_width=1)
                    for b, hyps in enumerate(beams):
                        self.assertEqual(len(hyps), 1)
                        n = int(g.lengths[b])
                        self.assertEqual(hyps[0].tokens, g.tokens[b, :n].tolist())
                        torch.testing.assert_close(hyps[0].logits, g.logits[b, :n],
                                                   rtol=0, atol=1e-5)

    def test_beam_scores_are_consistent(self):
        for i, (arch, kw) in enumerate(SEQ2SEQ_VARIANTS):
            with self.subTest(arch=arch, kw=kw):
                model, _ = random_model(arch, 40 + i, **kw)
                src = batch_for(model, i)
                beams = model.beam_decode(src, LENGTHS, 8, beam_width=3, length_alpha=0.6)
                for b, hyps in enumerate(beams):
                    self.assertTrue(1 <= len(hyps) <= 3)
                    norms = [h.norm_score for h in hyps]
                    self.assertEqual(norms, sorted(norms, reverse=True))
                    for h in hyps:
                        self.assertEqual(h.finished, h.tokens[-1] == model.eos_id)
                        self.assertNotIn(model.eos_id, h.tokens[:-1])
                        self.assertTrue(h.finished or len(h.tokens) == 8)
                        logp = torch.log_softmax(h.logits, -1)
                        total = float(logp[torch.arange(len(h.tokens)), h.tokens].sum())
                        self.assertAlmostEqual(total, h.score, places=4)
                        self.assertAlmostEqual(h.norm_score, h.score / len(h.tokens) ** 0.6,
                                               places=5)
                        self.assertEqual(tuple(h.attention.shape),
                                         (len(h.tokens), src.size(1)))
                    # The hypotheses' logits are the model's own along their tokens.
                    best = hyps[0]
                    tgt_in = torch.tensor([[model.bos_id] + best.tokens[:-1]])
                    n = int(LENGTHS[b])
                    with torch.no_grad():
                        logits, _ = model(src[b:b + 1, :n], LENGTHS[b:b + 1], tgt_in)
                    torch.testing.assert_close(logits[0], best.logits, rtol=0, atol=1e-5)

    def test_attention_rows_sum_to_one_and_vanish_past_the_source(self):
        for i, (arch, kw) in enumerate(SEQ2SEQ_VARIANTS):
            with self.subTest(arch=arch, kw=kw):
                model, _ = random_model(arch, 60 + i, **kw)
                src = batch_for(model, i)
                g = model.greedy_decode(src, LENGTHS, 7)
                valid = vm.length_mask(g.lengths, g.tokens.size(1))
                src_mask = vm.length_mask(LENGTHS, src.size(1))
                attn = g.attention
                sums = attn.sum(-1)
                torch.testing.assert_close(sums[valid], torch.ones_like(sums[valid]))
                self.assertTrue(bool((attn >= 0).all()))
                self.assertEqual(float(attn.masked_select(~src_mask[:, None, :]).abs().sum()), 0)
                self.assertTrue(bool((attn[1, :, 0][valid[1]] == 1).all()))  # length-1 row

    def test_padding_does_not_change_results(self):
        for i, (arch, kw) in enumerate(SEQ2SEQ_VARIANTS):
            with self.subTest(arch=arch, kw=kw):
                model, _ = random_model(arch, 70 + i, **kw)
                a = model.greedy_decode(batch_for(model, i), LENGTHS, 6)
                b = model.greedy_decode(batch_for(model, i, pad_fill=5), LENGTHS, 6)
                self.assertTrue(torch.equal(a.tokens, b.tokens))
                torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-6)
                # ... nor do the other rows of the batch (and extra padding columns).
                wide = torch.cat([batch_for(model, i), torch.zeros(len(LENGTHS), 3,
                                                                   dtype=torch.long)], 1)
                c = model.greedy_decode(wide[2:3], LENGTHS[2:3], 6)
                n = int(a.lengths[2])
                self.assertEqual(c.tokens[0, :n].tolist(), a.tokens[2, :n].tolist())
                torch.testing.assert_close(c.logits[0, :n], a.logits[2, :n], rtol=0, atol=1e-5)


class DecodeRulesTest(unittest.TestCase):
    def test_each_rule_on_a_hand_made_row(self):
        x = torch.tensor([[2.0, -1.0, 0.5, 3.0, -2.0, 1.0]])
        eos = 5
        # Penalty: generated tokens 3 (twice), 1 and 4; BOS is never passed in.
        y = vm.DecodeRules(repetition_penalty=2.0)(x, [[3, 1, 3, 4]], 4)
        self.assertEqual(y.tolist(), [[2.0, -2.0, 0.5, 1.5, -4.0, 1.0]])
        # Bigrams: the last token is 3, and (3, 1) and (3, 4) occurred: 1 and 4 are banned.
        y = vm.DecodeRules(no_repeat_ngram_size=2)(x, [[3, 1, 3, 4, 3]], 5)
        self.assertEqual(y.tolist(), [[2.0, -math.inf, 0.5, 3.0, -math.inf, 1.0]])
        # n = 1 bans every generated token; n longer than the history bans nothing.
        y = vm.DecodeRules(no_repeat_ngram_size=1)(x, [[0, 2]], 2)
        self.assertEqual(y.tolist(), [[-math.inf, -1.0, -math.inf, 3.0, -2.0, 1.0]])
        self.assertTrue(torch.equal(vm.DecodeRules(no_repeat_ngram_size=3)(x, [[0, 2]], 2), x))
        # min_length: EOS banned at steps 0 .. m-1.
        self.assertEqual(vm.DecodeRules(min_length=2, eos=eos)(x, [[0]], 1)[0, eos].item(), -math.inf)
        self.assertEqual(vm.DecodeRules(min_length=2, eos=eos)(x, [[0, 1]], 2)[0, eos].item(), 1.0)

    def test_rules_change_greedy_and_beam_as_stated(self):
        torch.manual_seed(5)
        for architecture, kw in SEQ2SEQ_VARIANTS[:2]:
            model, _ = export_torch.random_model(architecture, 5, **kw)
            src = torch.randint(4, model.config()["src_vocab_size"], (len(LENGTHS), int(LENGTHS.max())))
            rules = vm.DecodeRules(repetition_penalty=1.3, no_repeat_ngram_size=2, min_length=3,
                                   eos=model.eos_id)
            g = model.greedy_decode(src, LENGTHS, 9, rules=rules)
            for b in range(len(LENGTHS)):
                toks = g.tokens[b, : g.lengths[b]].tolist()
                pairs = list(zip(toks, toks[1:]))
                self.assertEqual(len(pairs), len(set(pairs)), toks)
                self.assertTrue(model.eos_id not in toks[:3], toks)
            for hyps in model.beam_decode(src, LENGTHS, 9, beam_width=3, rules=rules):
                for h in hyps:
                    pairs = list(zip(h.tokens, h.tokens[1:]))
                    self.assertEqual(len(pairs), len(set(pairs)), h.tokens)
                    self.assertTrue(model.eos_id not in h.tokens[:3], h.tokens)


class BeamSearchOptionsTest(unittest.TestCase):
    def test_patience_and_coverage_penalty(self):
        model, _ = export_torch.random_model("luong_seq2seq", 7)
        src = torch.randint(4, model.config()["src_vocab_size"], (len(LENGTHS), int(LENGTHS.max())))
        plain = model.beam_decode(src, LENGTHS, 8, beam_width=3)
        same = model.beam_decode(src, LENGTHS, 8, beam_width=3, patience=1.0)
        self.assertEqual([[h.tokens for h in r] for r in plain], [[h.tokens for h in r] for r in same])
        # Patience: a superset of finished hypotheses, so the best is at least as good.
        patient = model.beam_decode(src, LENGTHS, 8, beam_width=3, patience=2.0)
        for a, b in zip(plain, patient):
            self.assertLessEqual(len(b), 3)
            self.assertGreaterEqual(b[0].norm_score, a[0].norm_score)
        # Coverage: norm_score gains beta * sum log(min(c, 1)) over covered positions, ranked.
        beta = 0.5
        for hyps in model.beam_decode(src, LENGTHS, 8, beam_width=3, coverage_penalty=beta):
            for h in hyps:
                c = h.attention.double().sum(0)
                pen = sum(math.log(min(float(x), 1.0)) for x in c if float(x) > 0)
                self.assertAlmostEqual(h.norm_score, h.score / len(h.tokens) ** 0.6 + beta * pen,
                                       places=5)
            self.assertEqual([h.norm_score for h in hyps],
                             sorted((h.norm_score for h in hyps), reverse=True))


class ClassifierTest(unittest.TestCase):
    def test_outputs_masks_and_probabilities(self):
        for i, (arch, kw) in enumerate(CLASSIFIER_VARIANTS):
            with self.subTest(arch=arch, kw=kw):
                model, _ = random_model(arch, 80 + i, **kw)
                tokens = batch_for(model, i)
                with torch.no_grad():
                    r = model(tokens, LENGTHS)
                    r2 = model(batch_for(model, i, pad_fill=6), LENGTHS)
                torch.testing.assert_close(r.logits, r2.logits, rtol=0, atol=1e-6)
                mask = vm.length_mask(LENGTHS, tokens.size(1))
                if model.output_activation == "softmax":
                    torch.testing.assert_close(r.probs.sum(-1), torch.ones(len(LENGTHS)))
                else:
                    torch.testing.assert_close(r.probs, torch.sigmoid(r.logits))
                self.assertEqual(float(r.rnn_outputs[~mask].abs().sum()), 0.0)
                if r.pooling is not None:
                    torch.testing.assert_close(r.pooling.sum(-1), torch.ones(len(LENGTHS)))
                    self.assertEqual(float(r.pooling[~mask].abs().sum()), 0.0)
                if r.self_attention is not None:
                    sa = r.self_attention  # [B, heads, S, S]
                    rows = sa.sum(-1)
                    q_mask = mask[:, None, :].expand_as(rows)
                    torch.testing.assert_close(rows[q_mask], torch.ones_like(rows[q_mask]))
                    self.assertEqual(float(rows[~q_mask].abs().sum()), 0.0)
                    self.assertEqual(float(sa.masked_select(~mask[:, None, None, :]).sum()), 0)

    def test_self_attention_matches_a_direct_computation(self):
        model, _ = random_model("self_attention_rnn", 90, heads=2, attention_projections=True,
                                positional_encoding=True, residual=True)
        tokens = batch_for(model, 1)
        with torch.no_grad():
            r = model(tokens, LENGTHS)
            e = model.embedding.weight.double()
            for b, n in enumerate(LENGTHS.tolist()):
                x = e[tokens[b, :n]]
                pos = torch.arange(n, dtype=torch.float64)[:, None]
                i2 = torch.arange(0, x.size(1), 2, dtype=torch.float64)
                angle = pos / 10000 ** (i2 / x.size(1))
                pe = torch.zeros_like(x)
                pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
                x = x + pe
                lin = lambda m, t: t @ m.weight.double().T + m.bias.double()  # noqa: E731
                q, k, v = lin(model.q_proj, x), lin(model.k_proj, x), lin(model.v_proj, x)
                heads = []
                for h in range(2):
                    cols = slice(4 * h, 4 * h + 4)
                    a = torch.softmax(q[:, cols] @ k[:, cols].T / 2.0, -1)
                    torch.testing.assert_close(r.self_attention[b, h, :n, :n].double(), a,
                                               rtol=0, atol=1e-6)
                    heads.append(a @ v[:, cols])
                y = x + lin(model.out_proj, torch.cat(heads, 1))
                torch.testing.assert_close(r.rnn_inputs[b, :n].double(), y, rtol=0, atol=1e-5)


class FixtureTest(unittest.TestCase):
    def test_fixtures_are_written_and_consistent(self):
        with tempfile.TemporaryDirectory() as d:
            names = ["bahdanau_gru", "luong_gru_general_nofeed_2layer",
                     "selfattn_lstm_pe_res_identity2_attnpool"]
            make_model_fixtures.main(["--out", d, "--only", *names])
            with open(os.path.join(d, "index.json")) as f:
                index = json.load(f)
            # The version-1 copies come right after their case.
            self.assertEqual([c["name"] for c in index["cases"]], names + [names[2] + "_v1"])
            self.assertEqual([c["format_version"] for c in index["cases"]], [2, 2, 2, 1])
            model, config = export_torch.load_model(os.path.join(d, names[0]))
            exp, meta = st.load_with_metadata(os.path.join(d, names[0], "expected.safetensors"))
            self.assertEqual(meta["beam_width"], "3")
            src = torch.from_numpy(exp["src"]).long()
            lengths = torch.from_numpy(exp["src_lengths"]).long()
            g = model.greedy_decode(src, lengths, int(meta["max_len"]))
            self.assertTrue(np.array_equal(g.tokens.numpy(), exp["greedy_tokens"]))
            self.assertTrue(np.array_equal(g.logits.numpy(), exp["greedy_logits"]))
            beams = model.beam_decode(src, lengths, int(meta["max_len"]), 3)
            for b, hyps in enumerate(beams):
                self.assertEqual(len(hyps), exp["beam_count"][b])
                for j, h in enumerate(hyps):
                    self.assertEqual(h.tokens, exp["beam_tokens"][b, j, : len(h.tokens)].tolist())
            self.assertEqual(st.load(os.path.join(d, names[1], "model.safetensors"))
                             ["encoder.weight_ih_l0"].__class__, st.BF16)
            self.assertIn("self_attention", st.load(os.path.join(d, names[2],
                                                                 "expected.safetensors")))


MONTH_NUMBER = {}
for _i, _m in enumerate(train_dates.MONTHS):
    MONTH_NUMBER[_m.lower()] = _i + 1
    MONTH_NUMBER[_m[:3].lower()] = _i + 1
MONTH_NUMBER["sept"] = 9


def parse_date(text):
    """An independent reading of the generator's conventions (docs in train_dates.py)."""
    t = re.sub(r"\s+", " ", text.lower().replace(",", " ")).strip()
    words = [w for w in t.split(" ") if w not in ("the", "of")]
    weekday = None
    if words and words[0][:3] in [w[:3].lower() for w in train_dates.WEEKDAYS] and \
            not words[0][0].isdigit():
        weekday = words.pop(0)

    def expand(y):
        return int(y) if len(y) == 4 else train_dates.year_from_two_digits(int(y))

    if len(words) == 1:
        parts = re.split(r"[/.\-]", words[0])
        if len(parts) == 1:
            w = parts[0]
            return datetime.date(int(w[:4]), int(w[4:6]), int(w[6:])), weekday
        a, b, c = parts
    else:
        a, b, c = words
    strip = lambda s: re.sub(r"(st|nd|rd|th)$", "", s)  # noqa: E731
    if a in MONTH_NUMBER:  # Month D Y
        return datetime.date(expand(c.lstrip("'")), MONTH_NUMBER[a], int(strip(b))), weekday
    if len(a) == 4 and a.isdigit():  # Y M D
        return datetime.date(int(a), int(b), int(c)), weekday
    month = MONTH_NUMBER[b] if b in MONTH_NUMBER else int(b)
    return datetime.date(expand(c.lstrip("'")), month, int(strip(a))), weekday


class ExportModuleTest(unittest.TestCase):
    """export_module on modules the exporter cannot map: an ExportError naming the module, the
    operation and the source line -- never a silently different model."""

    class Pooled(torch.nn.Module):
        def __init__(self, layer=None, op=None):
            super().__init__()
            self.emb = torch.nn.Embedding(9, 4)
            self.rnn = torch.nn.GRU(4, 5, batch_first=True)
            self.layer = layer
            self.op = op
            self.head = torch.nn.Linear(5, 2)

        def forward(self, tokens, lengths):
            h, _ = self.rnn(self.emb(tokens))
            if self.layer is not None:
                h = self.layer(h)
            if self.op is not None:
                h = self.op(h)
            return self.head(h[:, 0])

    def expect_error(self, model, *fragments):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(export_torch.ExportError) as cm:
                export_torch.export_module(model, d)
        message = str(cm.exception)
        for f in fragments:
            self.assertIn(f, message)
        self.assertFalse(os.path.exists(os.path.join(d, "model.json")))
        return message

    def test_unmapped_operations_are_named_with_their_line(self):
        self.expect_error(self.Pooled(op=torch.exp), "operation call_function 'exp'", "has no vkrnn mapping",
                          "test_models.py:", "h = self.op(h)")
        self.expect_error(self.Pooled(layer=torch.nn.LayerNorm(5)), "module 'layer'", "LayerNorm", "has no vkrnn mapping")
        msg = self.expect_error(self.Pooled(), "indexing axis 1", "h[:, 0]")  # a time step of a [B, S, H] sequence
        self.assertIn("module '(top level)'", msg)

    def test_untraceable_and_unsupported_forms(self):
        class Branchy(self.Pooled):
            def forward(self, tokens, lengths):
                if lengths.max() > 3:  # data-dependent control flow
                    tokens = tokens + 1
                return super().forward(tokens, lengths)
        self.expect_error(Branchy(), "torch.fx could not trace", "lengths.max() > 3")

        class SeqFirst(self.Pooled):
            def __init__(self):
                super().__init__()
                self.rnn = torch.nn.GRU(4, 5)

            def forward(self, tokens, lengths):
                h, _ = self.rnn(self.emb(tokens))
                return self.head(h[0])
        self.expect_error(SeqFirst(), "module 'rnn'", "batch_first=False")

        class LogSoftmax(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(9, 4)
                self.cell = torch.nn.GRUCell(4, 4)
                self.out = torch.nn.Linear(4, 9)

            def encode(self, tokens, lengths):
                return self.emb(tokens), torch.zeros(tokens.size(0), 4)

            def step(self, token, h, memory):
                h = self.cell(self.emb(token), h)
                return torch.log_softmax(self.out(h), -1), h
        with tempfile.TemporaryDirectory() as d, self.assertRaises(export_torch.ExportError) as cm:
            export_torch.export_module(LogSoftmax(), d, special_tokens={"bos": 1}, max_length=4)
        self.assertIn("module '(top level)', operation call_function 'log_softmax'", str(cm.exception))
        self.assertIn("return the logits themselves", str(cm.exception))

    def test_a_users_classifier_stores_its_weights_by_name(self):
        class LastState(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(9, 4)
                self.rnn = torch.nn.LSTM(4, 5, batch_first=True, num_layers=2)
                self.head = torch.nn.Linear(5, 2)

            def forward(self, tokens, lengths):
                packed = torch.nn.utils.rnn.pack_padded_sequence(self.emb(tokens), lengths, batch_first=True,
                                                                 enforce_sorted=False)
                _, (h, _) = self.rnn(packed)
                return self.head(torch.tanh(h[-1]))
        m = LastState()
        with tempfile.TemporaryDirectory() as d:
            config = export_torch.export_module(m, d, labels=["no", "yes"])
            self.assertEqual((config["version"], config["task"], config["architecture"]), (2, "classifier", "custom"))
            ops = [n["op"] for n in config["graphs"]["forward"]["nodes"]]
            self.assertEqual(ops, ["embedding", "rnn", "select", "activation", "linear"])
            stored = st.load(os.path.join(d, "model.safetensors"))
            self.assertEqual(sorted(stored), sorted(m.state_dict()))


class DatesTest(unittest.TestCase):
    def test_generated_dates_are_right_including_the_weekday(self):
        rng = random.Random(123)
        weekdays = 0
        for _ in range(3000):
            text, target = train_dates.generate(rng)
            date, weekday = parse_date(text)
            self.assertEqual(date.isoformat(), target, text)
            self.assertEqual(text, text.strip(), text)
            self.assertNotIn("\t", text)
            if weekday is not None:
                weekdays += 1
                self.assertTrue(train_dates.WEEKDAYS[date.weekday()].lower().startswith(weekday),
                                f"{text!r}: {target} is a {date:%A}")
            self.assertTrue(datetime.date(1950, 1, 1) <= date <= datetime.date(2049, 12, 31))
        self.assertGreater(weekdays, 300)

    def test_ordinals_and_pivot(self):
        self.assertEqual([train_dates.ordinal(d) for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)],
                         ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd",
                          "23rd", "31st"])
        self.assertEqual(train_dates.year_from_two_digits(49), 2049)
        self.assertEqual(train_dates.year_from_two_digits(50), 1950)

    def test_split_is_disjoint_and_reproducible(self):
        train = train_dates.dataset(1, 3000)
        held = train_dates.dataset(2, 500, exclude={p[0] for p in train})
        self.assertEqual(train, train_dates.dataset(1, 3000))
        self.assertFalse({p[0] for p in train} & {p[0] for p in held})
        self.assertEqual(len({p[0] for p in held}), 500)

    def test_committed_model_reproduces_its_accuracy(self):
        sample = os.path.join(ROOT, "samples", "dates")
        model, config = export_torch.load_model(os.path.join(sample, "model"))
        self.assertEqual(config["architecture"], "bahdanau_seq2seq")
        self.assertEqual(config["src_vocab"], train_dates.SRC_VOCAB)
        pairs = train_dates.read_heldout(os.path.join(sample, "heldout.txt"))
        self.assertGreaterEqual(len(pairs), 2000)
        acc, wrong = train_dates.evaluate(model, pairs[:300])
        self.assertGreaterEqual(acc, 0.97, wrong[:5])


class SentimentTest(unittest.TestCase):
    def test_generator_labels(self):
        rng = random.Random(4)
        for _ in range(500):
            text, label = train_sentiment.generate(rng)
            self.assertIn(label, (0, 1))
            self.assertEqual(text, text.strip())
        self.assertEqual(train_sentiment.label_of("the movie was great"), 1)
        self.assertEqual(train_sentiment.label_of("the movie was not great"), 0)

    def test_committed_model_reproduces_its_accuracy(self):
        sample = os.path.join(ROOT, "samples", "sentiment")
        model, config = export_torch.load_model(os.path.join(sample, "model"))
        self.assertEqual(config["architecture"], "rnn_attention_classifier")
        pairs = train_sentiment.read_heldout(os.path.join(sample, "heldout.txt"))
        acc = train_sentiment.evaluate(model, config["vocab"], pairs)
        self.assertGreaterEqual(acc, 0.95)


if __name__ == "__main__":
    unittest.main()
