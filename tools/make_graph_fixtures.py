#!/usr/bin/python3
"""Parity fixtures for models users write themselves: six attention RNNs in plain torch.nn code
(none of them a tools/vkrnn_models.py module, none special-cased by the exporter), each exported
with one call to export_torch.export_module, with inputs and float64 PyTorch outputs.

    make_graph_fixtures.py --out build/fixtures/graphs [--only NAME ...] [--list]

OUT/index.json lists the cases ({name, task, description}); OUT/<name>/ holds model.json,
model.safetensors (F32) and expected.safetensors (F64): the reference is the module in float64
with the exported (fp32-rounded) weights, on a ragged batch (lengths 9, 1, 6, 3).

expected.safetensors, seq2seq: src I32 [B, S], src_lengths I32 [B]; for every encoder output
role R "encoder.R"; greedy (stop at EOS) greedy_tokens I32 [B, T], greedy_lengths I32 [B],
greedy_logits [B, T, V], greedy_attention [B, T, S], greedy_margin [B, T] (top-1 minus top-2,
0 after EOS); fixed-length (no stop, N = max_len) fixed_tokens, fixed_logits, fixed_attention;
beam search (K = 3) beam_count I32 [B], beam_tokens I32 [B, K, N], beam_lengths, beam_finished,
beam_scores, beam_norm_scores. Metadata: max_len, beam_width, length_alpha.
Classifier: tokens, lengths, and for every output role R of the forward graph "R" (logits,
probs, ...). Values at padded positions (t >= length) are the reference's; compare valid ones.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
    from torch_required import require_torch
    require_torch("make_graph_fixtures")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402
import export_torch  # noqa: E402
import make_model_fixtures  # noqa: E402
import safetensors_io as st  # noqa: E402
import vkrnn_models as vm  # noqa: E402

LENGTHS = [9, 1, 6, 3]
BEAM_WIDTH = 3
PAD, BOS, EOS, UNK = 0, 1, 2, 3


# --- the models, as users write them ---------------------------------------------------------

class GruSeeded(nn.Module):
    """A unidirectional GRU encoder whose final state seeds a GRU decoder; dot attention over
    the encoder outputs from the decoder's output; logits from [output; context]."""

    def __init__(self, src_vocab=13, tgt_vocab=11, emb=8, hidden=12):
        super().__init__()
        self.src_emb = nn.Embedding(src_vocab, emb)
        self.tgt_emb = nn.Embedding(tgt_vocab, emb)
        self.encoder = nn.GRU(emb, hidden, batch_first=True)
        self.decoder = nn.GRU(emb, hidden, batch_first=True)
        self.out = nn.Linear(2 * hidden, tgt_vocab)

    def encode(self, tokens, lengths):
        packed = pack_padded_sequence(self.src_emb(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, h = self.encoder(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=tokens.size(1))
        mask = torch.arange(tokens.size(1))[None, :] < lengths[:, None]
        return (outputs, mask), h

    def step(self, token, h, memory):
        outputs, mask = memory
        o, h = self.decoder(self.tgt_emb(token).unsqueeze(1), h)
        q = o.squeeze(1)
        scores = torch.bmm(outputs, q.unsqueeze(2)).squeeze(2)
        scores = scores.masked_fill(~mask, float("-inf"))
        a = F.softmax(scores, dim=-1)
        context = torch.bmm(a.unsqueeze(1), outputs).squeeze(1)
        return self.out(torch.cat([q, context], dim=1)), h, a


class BiLstmBridged(nn.Module):
    """A bi-LSTM encoder bridged by two Linear layers (h and c) into a 2-layer LSTM decoder with
    input feeding and general (Luong) attention."""

    def __init__(self, src_vocab=13, tgt_vocab=11, emb=8, enc_hidden=6, dec_hidden=10):
        super().__init__()
        self.src_emb = nn.Embedding(src_vocab, emb)
        self.tgt_emb = nn.Embedding(tgt_vocab, emb)
        self.encoder = nn.LSTM(emb, enc_hidden, batch_first=True, bidirectional=True)
        self.bridge_h = nn.Linear(2 * enc_hidden, dec_hidden)
        self.bridge_c = nn.Linear(2 * enc_hidden, dec_hidden)
        self.decoder = nn.LSTM(emb + dec_hidden, dec_hidden, num_layers=2, batch_first=True)
        self.attn = nn.Linear(dec_hidden, 2 * enc_hidden, bias=False)
        self.combine = nn.Linear(2 * enc_hidden + dec_hidden, dec_hidden, bias=False)
        self.proj = nn.Linear(dec_hidden, tgt_vocab)
        self.dec_hidden = dec_hidden

    def encode(self, tokens, lengths):
        x = pack_padded_sequence(self.src_emb(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, c) = self.encoder(x)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.size(1))
        h0 = torch.tanh(self.bridge_h(torch.cat([h[0], h[1]], dim=-1)))
        c0 = self.bridge_c(torch.cat([c[0], c[1]], dim=-1))
        feed = out.new_zeros(tokens.size(0), self.dec_hidden)
        mask = torch.arange(tokens.size(1)).unsqueeze(0) < lengths.unsqueeze(1)
        return {"memory": out, "mask": mask}, (torch.stack([h0, h0]), torch.stack([c0, c0]), feed)

    def step(self, token, state, memory):
        h, c, feed = state
        x = torch.cat([self.tgt_emb(token), feed], dim=-1).unsqueeze(1)
        o, (h, c) = self.decoder(x, (h, c))
        q = o[:, 0]
        scores = torch.bmm(memory["memory"], self.attn(q).unsqueeze(2)).squeeze(2)
        a = torch.softmax(scores.masked_fill(memory["mask"] == 0, -1e9), dim=-1)
        context = torch.bmm(a.unsqueeze(1), memory["memory"]).squeeze(1)
        feed = torch.tanh(self.combine(torch.cat([context, q], dim=-1)))
        return self.proj(feed), (h, c, feed), a


class SelfAttentionBiGru(nn.Module):
    """Bias-free q / k / v self-attention (one head, key padding masked) feeding a 3-layer
    bidirectional GRU (bias=False too); the top layer's final states into a dense head."""

    def __init__(self, vocab=17, emb=8, hidden=5, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.q = nn.Linear(emb, emb, bias=False)
        self.k = nn.Linear(emb, emb, bias=False)
        self.v = nn.Linear(emb, emb, bias=False)
        self.rnn = nn.GRU(emb, hidden, num_layers=3, bidirectional=True, batch_first=True, bias=False)
        self.head = nn.Linear(2 * hidden, classes)
        self.scale = math.sqrt(emb)

    def forward(self, tokens, lengths):
        x = self.emb(tokens)
        mask = torch.arange(tokens.size(1))[None, :] < lengths[:, None]
        q, k, v = self.q(x), self.k(x), self.v(x)
        scores = torch.matmul(q, k.transpose(1, 2)) / self.scale
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        attended = torch.matmul(torch.softmax(scores, dim=-1), v)
        packed = pack_padded_sequence(attended, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(packed)
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=-1))


class AttentionPoolingSigmoid(nn.Module):
    """A bi-LSTM with a projection (proj_size) and attention pooling (u = v(tanh(W h)), masked
    softmax, weighted sum) and a sigmoid head; returns the probability and the pooling weights."""

    def __init__(self, vocab=17, emb=8, hidden=6, proj=4, attn=7):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True, proj_size=proj)
        self.W = nn.Linear(2 * proj, attn)
        self.v = nn.Linear(attn, 1)
        self.head = nn.Linear(2 * proj, 1)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.emb(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=tokens.size(1))
        u = self.v(torch.tanh(self.W(h))).squeeze(-1)
        mask = torch.arange(tokens.size(1))[None, :] < lengths[:, None]
        alpha = torch.softmax(u.masked_fill(~mask, float("-inf")), dim=-1)
        pooled = torch.bmm(alpha.unsqueeze(1), h).squeeze(1)
        return torch.sigmoid(self.head(pooled)), alpha


class AdditiveAllBiases(nn.Module):
    """Bahdanau attention with a bias on every Linear (keys, query, v), a bi-GRU encoder, a
    GRUCell decoder seeded by a bridge, context as a weighted sum."""

    def __init__(self, src_vocab=13, tgt_vocab=11, emb=8, enc_hidden=6, dec_hidden=10, attn=9):
        super().__init__()
        self.src_emb = nn.Embedding(src_vocab, emb)
        self.tgt_emb = nn.Embedding(tgt_vocab, emb)
        self.encoder = nn.GRU(emb, enc_hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * enc_hidden, dec_hidden)
        self.key = nn.Linear(2 * enc_hidden, attn)
        self.query = nn.Linear(dec_hidden, attn)
        self.v = nn.Linear(attn, 1)
        self.cell = nn.GRUCell(emb + 2 * enc_hidden, dec_hidden)
        self.out = nn.Linear(dec_hidden + 2 * enc_hidden, tgt_vocab)

    def encode(self, tokens, lengths):
        packed = pack_padded_sequence(self.src_emb(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        memory, h_n = self.encoder(packed)
        memory, _ = pad_packed_sequence(memory, batch_first=True, total_length=tokens.size(1))
        h = torch.tanh(self.bridge(torch.cat([h_n[0], h_n[1]], dim=1)))
        mask = torch.arange(tokens.size(1))[None, :] < lengths[:, None]
        return (memory, self.key(memory), mask), h

    def step(self, token, h, memory):
        values, keys, mask = memory
        e = self.v(torch.tanh(keys + self.query(h).unsqueeze(1))).squeeze(-1)
        a = F.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)
        context = (a.unsqueeze(-1) * values).sum(dim=1)
        h = self.cell(torch.cat([self.tgt_emb(token), context], dim=1), h)
        return self.out(torch.cat([h, context], dim=1)), h, a


class TutorialEncoderRNN(nn.Module):
    def __init__(self, input_size, hidden_size, dropout_p=0.1):
        super().__init__()
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, input):
        embedded = self.dropout(self.embedding(input))
        output, hidden = self.gru(embedded)
        return output, hidden


class BahdanauAttention(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.Wa = nn.Linear(hidden_size, hidden_size)
        self.Ua = nn.Linear(hidden_size, hidden_size)
        self.Va = nn.Linear(hidden_size, 1)

    def forward(self, query, keys):
        scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
        scores = scores.squeeze(2).unsqueeze(1)
        weights = F.softmax(scores, dim=-1)
        context = torch.bmm(weights, keys)
        return context, weights


class TutorialAttnDecoderRNN(nn.Module):
    def __init__(self, hidden_size, output_size, dropout_p=0.1):
        super().__init__()
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.attention = BahdanauAttention(hidden_size)
        self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)
        self.dropout = nn.Dropout(dropout_p)

    def forward_step(self, input, hidden, encoder_outputs):
        embedded = self.dropout(self.embedding(input))
        query = hidden.permute(1, 0, 2)
        context, attn_weights = self.attention(query, encoder_outputs)
        input_gru = torch.cat((embedded, context), dim=2)
        output, hidden = self.gru(input_gru, hidden)
        output = self.out(output)
        return output, hidden, attn_weights


class Tutorial(nn.Module):
    """PyTorch's "NLP from scratch: translation with a sequence to sequence network and
    attention" tutorial (EncoderRNN + AttnDecoderRNN, unchanged), wrapped in the protocol."""

    def __init__(self, src_vocab=13, tgt_vocab=11, hidden=12):
        super().__init__()
        self.encoder = TutorialEncoderRNN(src_vocab, hidden)
        self.decoder = TutorialAttnDecoderRNN(hidden, tgt_vocab)

    def encode(self, tokens, lengths):
        outputs, hidden = self.encoder(tokens)
        return outputs, hidden

    def step(self, token, hidden, encoder_outputs):
        output, hidden, attn = self.decoder.forward_step(token.unsqueeze(1), hidden, encoder_outputs)
        return output.squeeze(1), hidden, attn.squeeze(1)


# name -> (constructor, task, description)
CASES = {
    "gru_seeded_dot": (GruSeeded, "seq2seq", "GRU encoder whose final state seeds the GRU decoder, dot attention"),
    "bilstm_bridge_general_feed": (BiLstmBridged, "seq2seq",
                                   "bi-LSTM encoder bridged by two Linear layers into a 2-layer LSTM decoder, input "
                                   "feeding, general attention"),
    "additive_all_biases_grucell": (AdditiveAllBiases, "seq2seq",
                                    "additive attention with biases on every Linear, bi-GRU encoder, GRUCell decoder"),
    "tutorial_attn_decoder": (Tutorial, "seq2seq", "PyTorch seq2seq tutorial's EncoderRNN + AttnDecoderRNN"),
    "selfattn_nobias_bigru3": (SelfAttentionBiGru, "classifier",
                               "bias-free q/k/v self-attention feeding a 3-layer bidirectional GRU (no biases)"),
    "attention_pooling_sigmoid": (AttentionPoolingSigmoid, "classifier",
                                  "bi-LSTM with proj_size, attention pooling and a sigmoid head"),
}


# --- references ---------------------------------------------------------------------------------

def randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if isinstance(dict(model.named_modules()).get(name.rsplit(".", 1)[0]), nn.Embedding):
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 0.6)
    return model


def tokens_for(gen, vocab):
    steps = max(LENGTHS)
    tokens = torch.randint(UNK + 1, vocab, (len(LENGTHS), steps), generator=gen)
    mask = vm.length_mask(torch.tensor(LENGTHS), steps)
    return torch.where(mask, tokens, torch.full_like(tokens, PAD))


def f64(t):
    return np.ascontiguousarray(torch.as_tensor(t).detach().to(torch.float64).numpy())


def i32(t):
    return np.ascontiguousarray(torch.as_tensor(t).numpy().astype(np.int32))


def seq2seq_expected(model, config, gen):
    max_len = config["decode"]["max_length"]
    lengths = torch.tensor(LENGTHS)
    src = tokens_for(gen, model.src_vocab_size)
    out = {"src": i32(src), "src_lengths": i32(lengths)}
    encode = lambda t, l: model.encode(t, l)  # noqa: E731
    step = lambda tok, s, m: model.step(tok, s, m)  # noqa: E731
    with torch.no_grad():
        memory, state = encode(src, lengths)
        leaves = {}

        def walk(v, path):
            if isinstance(v, (tuple, list)):
                for i, x in enumerate(v):
                    walk(x, f"{path}_{i}")
            elif isinstance(v, dict):
                for k, x in v.items():
                    walk(x, f"{path}_{k}")
            elif torch.is_tensor(v) and v.dtype.is_floating_point:
                leaves[path] = v
        walk(memory, "memory")
        walk(state, "state")
        for role, name in config["graphs"]["encoder"]["outputs"].items():
            if role in leaves:
                out[f"encoder.{role}"] = f64(leaves[role])
        g = vm.greedy_decode(encode, step, src, lengths, max_len, BOS, EOS, PAD)
        fixed = vm.greedy_decode(encode, step, src, lengths, max_len, BOS, EOS, PAD, stop_at_eos=False)
        beams = vm.beam_decode(encode, step, src, lengths, max_len, BEAM_WIDTH, 0.6, BOS, EOS)
    top2 = torch.topk(g.logits, 2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1]) * vm.length_mask(g.lengths, g.logits.size(1))
    out.update(greedy_tokens=i32(g.tokens), greedy_lengths=i32(g.lengths), greedy_logits=f64(g.logits),
               greedy_attention=f64(g.attention), greedy_margin=f64(margin), fixed_tokens=i32(fixed.tokens),
               fixed_logits=f64(fixed.logits), fixed_attention=f64(fixed.attention))
    B, K = len(LENGTHS), BEAM_WIDTH
    tokens = np.full((B, K, max_len), PAD, np.int32)
    blen, bfin = np.zeros((B, K), np.int32), np.zeros((B, K), np.int32)
    scores, norm = np.zeros((B, K)), np.zeros((B, K))
    for b, hyps in enumerate(beams):
        for j, h in enumerate(hyps):
            tokens[b, j, : len(h.tokens)] = h.tokens
            blen[b, j], bfin[b, j] = len(h.tokens), int(h.finished)
            scores[b, j], norm[b, j] = h.score, h.norm_score
    out.update(beam_count=np.array([len(h) for h in beams], np.int32), beam_tokens=tokens, beam_lengths=blen,
               beam_finished=bfin, beam_scores=scores, beam_norm_scores=norm)
    meta = {"max_len": str(max_len), "beam_width": str(K), "length_alpha": "0.6"}
    glen = g.lengths.tolist()
    valid = margin[margin > 0]
    # Useful: early EOS and full-length rows, decisive argmaxes, finished beam hypotheses.
    quality = (min(glen) < max_len and max(glen) == max_len and float(valid.min()) > 1e-3 and int(bfin.sum()) > 0)
    return out, meta, quality


def classifier_expected(model, config, gen):
    lengths = torch.tensor(LENGTHS)
    tokens = tokens_for(gen, model.vocab_size)
    with torch.no_grad():
        r = model(tokens, lengths)
    r = r if isinstance(r, tuple) else (r,)
    out = {"tokens": i32(tokens), "lengths": i32(lengths)}
    roles = config["graphs"]["forward"]["outputs"]
    first = r[0]
    if "probs" in roles:
        out["probs"] = f64(first)
        # The exporter's logits are the input of the final activation.
        out["logits"] = f64(torch.logit(first) if config.get("output_activation") == "sigmoid" else torch.log(first))
    else:
        out["logits"] = f64(first)
        out["probs"] = f64(torch.softmax(first, -1) if first.size(1) > 1 else torch.sigmoid(first))
    for i, extra in enumerate(r[1:], 1):
        out[f"output_{i}"] = f64(extra)
    return out, {}, True


def make_case(name, out_dir, seed):
    ctor, task, description = CASES[name]
    case_dir = os.path.join(out_dir, name)
    for attempt in range(50):
        model = randomize(ctor(), seed + attempt).eval()
        if task == "seq2seq":
            last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
            with torch.no_grad():  # make EOS likely enough that some rows stop early
                last.bias[EOS] += 1.0
            model.src_vocab_size = next(m for m in model.modules() if isinstance(m, nn.Embedding)).num_embeddings
            config = export_torch.export_module(model, case_dir, special_tokens={"pad": PAD, "bos": BOS, "eos": EOS, "unk": UNK},
                                                max_length=8, beam_width=BEAM_WIDTH)
        else:
            model.vocab_size = model.emb.num_embeddings
            config = export_torch.export_module(model, case_dir)
        # The reference: the module in float64 with the weights as exported (fp32).
        model = model.float().double()
        gen = torch.Generator().manual_seed(seed + attempt)
        fn = seq2seq_expected if task == "seq2seq" else classifier_expected
        expected, meta, ok = fn(model, config, gen)
        if ok:
            break
    else:
        raise RuntimeError(f"{name}: no seed in 50 gives a useful fixture")
    meta.update(case=name, task=task, seed=str(seed + attempt))
    st.save(os.path.join(case_dir, "expected.safetensors"), expected, metadata=meta)
    return [{"name": name, "task": task, "description": description}]


def main(argv=None):
    return make_model_fixtures.fixture_main(argv, __doc__, CASES, 700, lambda name, c: f"{name:32s} {c[1]:10s} {c[2]}",
                                            make_case, "graph fixtures")


if __name__ == "__main__":
    sys.exit(main())
