#!/usr/bin/python3
"""Reference PyTorch modules for the four vkrnn model architectures (docs/model-format.md).

    BahdanauSeq2Seq           "bahdanau_seq2seq"          additive attention encoder-decoder
    LuongSeq2Seq              "luong_seq2seq"             global attention (dot/general/concat)
    RnnAttentionClassifier    "rnn_attention_classifier"  RNN + attention pooling + dense head
    SelfAttentionRnn          "self_attention_rnn"        (PE) + self-attention (+ residual) + RNN

Tensors are batch-first: tokens [B, S] int64, lengths [B] int64 with 1 <= lengths[b] <= S.
Every module trains with plain PyTorch (forward with teacher forcing for the seq2seq models) and
its parameters, named as in state_dict(), are exactly what tools/export_torch.py writes. The
equations here ARE the format's definition: docs/model-format.md restates them for the C++ side.
"""

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.fx
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

FORMAT = "vkrnn-model"
VERSION = 1

PAD, BOS, EOS, UNK = 0, 1, 2, 3  # defaults; every model stores its own ids in its config
DEFAULT_LENGTH_ALPHA = 0.6       # beam search: hypotheses ranked by score / length ** alpha

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


# --- shared pieces ---------------------------------------------------------------------------

def length_mask(lengths, steps):
    """[B, steps] bool, True where position < length."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def tracing():
    """True while torch.fx traces the module (tools/export_torch.py): host-side checks skip."""
    return torch.fx._symbolic_trace.is_fx_tracing()


def check_lengths(tokens, lengths, what="src"):
    if tracing():
        return
    if tokens.dim() != 2:
        raise ValueError(f"{what}: expected [batch, steps] token ids, "
                         f"got shape {list(tokens.shape)}")
    if lengths.shape != (tokens.size(0),):
        raise ValueError(f"{what}_lengths: expected shape [{tokens.size(0)}], "
                         f"got {list(lengths.shape)}")
    if tokens.size(0) and (int(lengths.min()) < 1 or int(lengths.max()) > tokens.size(1)):
        raise ValueError(f"{what}_lengths must lie in [1, {tokens.size(1)}], "
                         f"got {lengths.tolist()}")


def masked_softmax(scores, mask):
    """Softmax over the last axis; masked positions get exactly 0 (every row has one valid)."""
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


def run_rnn(rnn, x, lengths, h0=None):
    """rnn over x [B, T, in] with per-row lengths: outputs [B, T, D*H] (zero at t >= length),
    final state h_n [L*D, B, H] (LSTM: (h_n, c_n)) taken after each row's own last step."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, state = rnn(packed, h0)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
    return out, state


def rnn_tensor_map(prefix, rnn):
    """{torch RNN parameter name: state_dict name} for one nn.GRU / nn.LSTM submodule."""
    return {name: f"{prefix}.{name}" for name, _ in rnn.named_parameters()}


def sinusoidal_encoding(steps, dim):
    """pe[pos, 2i] = sin(pos / 10000^(2i/d)), pe[pos, 2i+1] = cos(pos / 10000^(2i/d)), float32.
    Computed in float64 then rounded once, so it is within 0.5 ulp of the exact encoding."""
    pos = np.arange(steps, dtype=np.float64)[:, None]
    i2 = np.arange(0, dim, 2, dtype=np.float64)[None, :]
    angle = pos / np.power(10000.0, i2 / dim)
    pe = np.zeros((steps, dim), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : dim // 2])
    return torch.from_numpy(pe.astype(np.float32))


class AdditiveAttention(nn.Module):
    """e_s = v . tanh(W_k m_s + W_q q + b), keys K = W_k m computed once per source.
    Bahdanau attention (bias=True) and Luong "concat" (bias=False: v . tanh(W_a [q; m_s]) with
    W_a = [W_q | W_k])."""

    def __init__(self, memory_dim, query_dim, attention_dim, bias=True):
        super().__init__()
        self.key_proj = nn.Linear(memory_dim, attention_dim, bias=False)
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=bias)
        self.v = nn.Parameter(torch.empty(attention_dim).uniform_(-0.1, 0.1))

    def keys(self, memory):
        return self.key_proj(memory)

    def scores(self, keys, query):
        return torch.tanh(keys + self.query_proj(query)[:, None, :]) @ self.v

    def tensor_map(self, prefix):
        out = {"attention.key_weight": f"{prefix}.key_proj.weight",
               "attention.query_weight": f"{prefix}.query_proj.weight",
               "attention.v": f"{prefix}.v"}
        if self.query_proj.bias is not None:
            out["attention.query_bias"] = f"{prefix}.query_proj.bias"
        return out


@dataclass
class DecodeResult:
    """Greedy decode of a batch. steps = decode steps actually run (<= max_len).
    tokens [B, steps] (pad after a row's EOS), lengths [B] (tokens produced, EOS included),
    logits [B, steps, V] and attention [B, steps, S] (zero after a row's EOS step)."""
    tokens: torch.Tensor
    lengths: torch.Tensor
    logits: torch.Tensor
    attention: torch.Tensor


@dataclass
class Hypothesis:
    """One beam-search result. tokens: generated ids (EOS included when finished), without BOS.
    score: sum of the log-softmax of each chosen token; norm_score = score / len(tokens)**alpha.
    logits [len, V], attention [len, S]: what the decoder produced along this hypothesis."""
    tokens: List[int]
    score: float
    norm_score: float
    finished: bool
    logits: torch.Tensor
    attention: torch.Tensor


class Seq2SeqBase(nn.Module):
    """Teacher forcing, greedy and beam decoding over a subclass's encode() / step()."""

    def _init_special(self, pad_id, bos_id, eos_id, unk_id, max_decode_length, beam_width,
                      length_alpha):
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = pad_id, bos_id, eos_id, unk_id
        self.max_decode_length = max_decode_length
        self.beam_width = beam_width
        self.length_alpha = length_alpha

    def _special_config(self):
        return {"special_tokens": {"pad": self.pad_id, "bos": self.bos_id, "eos": self.eos_id,
                                   "unk": self.unk_id},
                "max_decode_length": self.max_decode_length,
                "beam": {"width": self.beam_width, "length_alpha": self.length_alpha}}

    # Subclasses: encode(src, lengths) -> memory dict (tensors with batch at dim 0, plus
    # "state": the decoder state, tuple of tensors with batch at dim 1 for RNN states);
    # step(memory, state, prev_tokens) -> (logits [B, V], attention [B, S], new state).

    def forward(self, src, src_lengths, tgt_in):
        """Teacher forcing: tgt_in [B, T] = BOS followed by the target shifted right.
        Returns (logits [B, T, V], attention [B, T, S])."""
        memory = self.encode(src, src_lengths)
        state = memory["state"]
        logits, attention = [], []
        for t in range(tgt_in.size(1)):
            step_logits, step_attn, state = self.step(memory, state, tgt_in[:, t])
            logits.append(step_logits)
            attention.append(step_attn)
        return torch.stack(logits, 1), torch.stack(attention, 1)

    # The protocol every seq2seq module exported by tools/export_torch.py follows.
    def protocol_encode(self, src, src_lengths):
        memory = self.encode(src, src_lengths)
        return {k: v for k, v in memory.items() if k != "state"}, memory["state"]

    def protocol_step(self, token, state, memory):
        logits, attention, new_state = self.step(memory, state, token)
        return logits, new_state, attention

    @torch.no_grad()
    def greedy_decode(self, src, src_lengths, max_len=None, stop_at_eos=True, rules=None):
        """Argmax decoding from BOS (greedy_decode() below)."""
        check_lengths(src, src_lengths)
        return greedy_decode(self.protocol_encode, self.protocol_step, src, src_lengths,
                             self.max_decode_length if max_len is None else max_len, self.bos_id,
                             self.eos_id, self.pad_id, stop_at_eos, rules)

    @torch.no_grad()
    def beam_decode(self, src, src_lengths, max_len=None, beam_width=None, length_alpha=None,
                    rules=None, patience=1.0, coverage_penalty=0.0):
        """Beam search, one source row at a time (beam_decode() below)."""
        check_lengths(src, src_lengths)
        return beam_decode(self.protocol_encode, self.protocol_step, src, src_lengths,
                           self.max_decode_length if max_len is None else max_len,
                           self.beam_width if beam_width is None else beam_width,
                           self.length_alpha if length_alpha is None else length_alpha,
                           self.bos_id, self.eos_id, rules, patience, coverage_penalty)


# --- decoding any module ------------------------------------------------------------------------
# encode(tokens, lengths) -> (memory, state) and step(token, state, memory) -> (logits, state,
# attention): memory and state are tensors or nested tuples / lists / dicts of them. Memory
# tensors have the batch at dim 0; state tensors of rank 3 at dim 1 (RNN states [layers, B, H]),
# others at dim 0.

def _tree_map(fn, tree):
    if isinstance(tree, (tuple, list)):
        return type(tree)(_tree_map(fn, t) for t in tree)
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree) if torch.is_tensor(tree) else tree


@dataclass
class DecodeRules:
    """The logits processing rules of docs/runtime.md, "Decoding options" (CTranslate2's), on
    the logits of one step: rules(logits [n, V], generated, step) -> the processed logits (a new
    tensor), generated[i] being row i's generated tokens so far (never BOS), step the number of
    tokens before this one.
    - repetition_penalty p: every distinct generated token v: x < 0 ? x * p : x / p;
    - no_repeat_ngram_size n: every token that would complete an n-gram already in the row gets
      -inf;
    - min_length m: EOS gets -inf while step < m."""
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_length: int = 0
    eos: Optional[int] = None

    def __call__(self, logits, generated, step):
        x = logits.clone()
        p, n = self.repetition_penalty, self.no_repeat_ngram_size
        for i, g in enumerate(generated):
            if p != 1.0 and g:
                seen = torch.tensor(sorted(set(g)), dtype=torch.long)
                v = x[i, seen]
                x[i, seen] = torch.where(v < 0, v * p, v / p)
            if n > 0 and len(g) >= n:
                tail = g[len(g) - n + 1:]
                for j in range(len(g) - n + 1):
                    if g[j:j + n - 1] == tail:
                        x[i, g[j + n - 1]] = float("-inf")
        if self.min_length > 0 and step < self.min_length:
            x[:, self.eos] = float("-inf")
        return x


def greedy_decode(encode, step, src, src_lengths, max_len, bos, eos, pad, stop_at_eos=True,
                  rules=None):
    """Argmax decoding from BOS. A row stops after emitting EOS; decoding stops when every
    row has (or after max_len steps). stop_at_eos=False (or eos None) runs exactly max_len steps
    and keeps feeding every row its own argmax (the W3 benchmark's "no early stop").
    rules (DecodeRules or alike): applied to each step's logits before the argmax; the logits
    returned are the processed ones."""
    memory, state = encode(src, src_lengths)
    stop_at_eos = stop_at_eos and eos is not None
    batch = src.size(0)
    prev = torch.full((batch,), bos, dtype=torch.long)
    active = torch.ones(batch, dtype=torch.bool)
    lengths = torch.full((batch,), max_len, dtype=torch.long)
    tokens, logits, attention = [], [], []
    generated = [[] for _ in range(batch)]
    for t in range(max_len):
        step_logits, state, step_attn = step(prev, state, memory)[:3]
        if rules is not None:
            step_logits = rules(step_logits, generated, t)
        tok = step_logits.argmax(-1)
        if stop_at_eos:
            tok = torch.where(active, tok, torch.full_like(tok, pad))
            step_logits = torch.where(active[:, None], step_logits, torch.zeros_like(step_logits))
            step_attn = torch.where(active[:, None], step_attn, torch.zeros_like(step_attn))
            ended = active & (tok == eos)
            lengths[ended] = t + 1
            active &= ~ended
        tokens.append(tok)
        logits.append(step_logits)
        attention.append(step_attn)
        prev = tok
        for b in range(batch):
            generated[b].append(int(tok[b]))
        if stop_at_eos and not bool(active.any()):
            break
    steps = len(tokens)
    lengths = torch.clamp(lengths, max=steps)
    return DecodeResult(torch.stack(tokens, 1), lengths, torch.stack(logits, 1), torch.stack(attention, 1))


def beam_decode(encode, step, src, src_lengths, max_len, k, alpha, bos, eos, rules=None,
                patience=1.0, coverage_penalty=0.0):
    """Beam search, one source row at a time. Returns, per row, up to k Hypothesis objects,
    best first (docs/model-format.md, "Beam search", is the spec):
    - Start: one hypothesis [BOS], score 0.
    - Each step: every alive hypothesis h and token w gives the candidate score
      score(h) + log_softmax(logits(h))[w] (in the logits' dtype). Candidates are ranked by
      score, descending; ties go to the lower hypothesis index, then the lower token id.
      Walking down the ranking, a candidate ending in EOS joins the finished list and any
      other joins the next beam, until the next beam holds k hypotheses.
    - Stop after a step that leaves >= max(1, round(k * patience)) finished hypotheses (k with
      the default patience 1), or after max_len steps (alive hypotheses then join the finished
      list, unfinished).
    - Rank the finished list by score / len**alpha (len = generated tokens, EOS included)
      + coverage_penalty * sum_j log(min(c_j, 1)) over the source positions j with c_j > 0,
      c_j = the hypothesis's attention on j summed over its steps (Wu et al. 2016),
      descending, ties by order of arrival; keep the first k.
    rules (DecodeRules or alike): applied to every alive hypothesis's logits (with its own
    generated tokens) before the log-softmax; the logits kept are the processed ones."""
    if k < 1:
        raise ValueError(f"beam_width must be >= 1, got {k}")
    results = []
    for b in range(src.size(0)):
        memory, state = encode(src[b:b + 1], src_lengths[b:b + 1])
        results.append(_beam_one(step, memory, state, max_len, k, alpha, bos, eos, rules,
                                 patience, coverage_penalty))
    return results


def _beam_one(step, memory, state, max_len, k, alpha, bos, eos, rules=None, patience=1.0,
              coverage_penalty=0.0):
    stop = max(1, math.floor(k * patience + 0.5))  # round half away from zero, as C++
    alive_tokens = [[]]
    alive_scores = None
    hist_logits = None  # [n, t, V]: logits along each alive hypothesis
    hist_attn = None    # [n, t, S]
    finished = []
    for t in range(max_len):
        n = len(alive_tokens)
        # Every row of the memory is the same source: expand it to the beam (a view).
        mem = _tree_map(lambda v: v.expand(n, *v.shape[1:]), memory)
        prev = torch.tensor([toks[-1] if toks else bos for toks in alive_tokens])
        logits, state, attn = step(prev, state, mem)[:3]
        if rules is not None:
            logits = rules(logits, alive_tokens, t)
        if alive_scores is None:
            alive_scores = torch.zeros(1, dtype=logits.dtype)
        vocab = logits.size(1)
        cand = (alive_scores[:, None] + torch.log_softmax(logits, -1)).reshape(-1)
        order = np.argsort(-cand.numpy(), kind="stable")

        def history(h):
            lg, at = logits[h][None], attn[h][None]
            if hist_logits is None:
                return lg, at
            return torch.cat([hist_logits[h], lg]), torch.cat([hist_attn[h], at])

        parents, next_tokens, next_scores = [], [], []
        for flat in order:
            h, w = divmod(int(flat), vocab)
            if w == eos:
                toks = alive_tokens[h] + [w]
                score = float(cand[flat])
                finished.append(Hypothesis(toks, score, score / len(toks) ** alpha, True,
                                           *history(h)))
                continue
            parents.append(h)
            next_tokens.append(w)
            next_scores.append(cand[flat])
            if len(parents) == k:
                break
        index = torch.tensor(parents, dtype=torch.long)
        step_logits = logits.index_select(0, index)[:, None]
        step_attn = attn.index_select(0, index)[:, None]
        if hist_logits is None:
            hist_logits, hist_attn = step_logits, step_attn
        else:
            hist_logits = torch.cat([hist_logits.index_select(0, index), step_logits], 1)
            hist_attn = torch.cat([hist_attn.index_select(0, index), step_attn], 1)
        alive_tokens = [alive_tokens[h] + [w] for h, w in zip(parents, next_tokens)]
        alive_scores = torch.stack(next_scores)
        if len(finished) >= stop:
            break
        if t == max_len - 1:
            for i, toks in enumerate(alive_tokens):
                score = float(alive_scores[i])
                finished.append(Hypothesis(toks, score, score / len(toks) ** alpha, False,
                                           hist_logits[i], hist_attn[i]))
            break
        # RNN states are [layers, n, H] (batch at dim 1); others [n, ...].
        state = _tree_map(lambda s: s.index_select(1 if s.dim() == 3 else 0, index), state)
    if coverage_penalty != 0:
        for h in finished:
            c = h.attention.double().sum(0)
            c = c[c > 0]
            h.norm_score += coverage_penalty * float(torch.log(torch.clamp(c, max=1.0)).sum())
    ranked = sorted(range(len(finished)), key=lambda i: (-finished[i].norm_score, i))
    return [finished[i] for i in ranked[:k]]


# --- 1. Bahdanau encoder-decoder ---------------------------------------------------------------

class BahdanauSeq2Seq(Seq2SeqBase):
    """Bahdanau et al. 2014 with a bidirectional encoder and additive attention.

    encoder:  m = BiRNN(src_embedding(x))                          m_s = [fwd_s; bwd_s], 2*He
    keys:     K_s = W_k m_s                                          once per source
    init:     s_0 = tanh(W_b bwd_0 + b_b)   (top layer's backward state after reading x_0;
              LSTM: c_0 = 0)
    step t:   e_s = v . tanh(K_s + W_q s_{t-1} + b_q)   a = masked softmax(e)   c_t = sum a_s m_s
              s_t = RNNCell([tgt_embedding(y_{t-1}); c_t], s_{t-1})
              logits_t = W_o [s_t; c_t; tgt_embedding(y_{t-1})] + b_o
    """

    architecture = "bahdanau_seq2seq"

    def __init__(self, src_vocab_size, tgt_vocab_size, embedding_dim=64, encoder_hidden=64,
                 decoder_hidden=128, attention_dim=64, encoder_layers=1, cell="gru",
                 pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, max_decode_length=32,
                 beam_width=3, length_alpha=DEFAULT_LENGTH_ALPHA):
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        self._init_special(pad_id, bos_id, eos_id, unk_id, max_decode_length, beam_width,
                           length_alpha)
        self.sizes = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                          embedding_dim=embedding_dim, encoder_hidden=encoder_hidden,
                          decoder_hidden=decoder_hidden, attention_dim=attention_dim,
                          encoder_layers=encoder_layers, cell=cell)
        self.cell = cell
        memory_dim = 2 * encoder_hidden
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_dim, padding_idx=pad_id)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, embedding_dim, padding_idx=pad_id)
        self.encoder = _CELLS[cell](embedding_dim, encoder_hidden, num_layers=encoder_layers,
                                    batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(encoder_hidden, decoder_hidden)
        self.attention = AdditiveAttention(memory_dim, decoder_hidden, attention_dim, bias=True)
        self.decoder = _CELLS[cell](embedding_dim + memory_dim, decoder_hidden, batch_first=True)
        self.output = nn.Linear(decoder_hidden + memory_dim + embedding_dim, tgt_vocab_size)

    def encode(self, src, src_lengths):
        check_lengths(src, src_lengths)
        memory, state = run_rnn(self.encoder, self.src_embedding(src), src_lengths)
        h_n = state[0] if self.cell == "lstm" else state
        s0 = torch.tanh(self.bridge(h_n[-1]))[None]  # [-1]: top layer, backward direction
        dec_state = (s0, torch.zeros_like(s0)) if self.cell == "lstm" else (s0,)
        return {"memory": memory, "keys": self.attention.keys(memory),
                "mask": length_mask(src_lengths, src.size(1)), "state": dec_state}

    def step(self, memory, state, prev_tokens):
        s_prev = state[0]  # [1, B, Hd]
        attn = masked_softmax(self.attention.scores(memory["keys"], s_prev[0]), memory["mask"])
        context = torch.bmm(attn[:, None, :], memory["memory"])[:, 0]
        emb = self.tgt_embedding(prev_tokens)
        x = torch.cat([emb, context], -1)[:, None, :]
        out, new = self.decoder(x, state if self.cell == "lstm" else state[0])
        new_state = new if self.cell == "lstm" else (new,)
        logits = self.output(torch.cat([out[:, 0], context, emb], -1))
        return logits, attn, tuple(new_state)

    def config(self):
        sizes = self.sizes
        return {"format": FORMAT, "version": VERSION, "architecture": self.architecture,
                **{k: sizes[k] for k in ("cell", "src_vocab_size", "tgt_vocab_size",
                                         "embedding_dim", "encoder_hidden", "encoder_layers")},
                "encoder_bidirectional": True, "decoder_hidden": sizes["decoder_hidden"],
                "decoder_layers": 1, "score": "additive",
                "attention_dim": sizes["attention_dim"], "input_feeding": False,
                **self._special_config(),
                "tensors": {"src_embedding": "src_embedding.weight",
                            "tgt_embedding": "tgt_embedding.weight",
                            "encoder": rnn_tensor_map("encoder", self.encoder),
                            "bridge.weight": "bridge.weight", "bridge.bias": "bridge.bias",
                            **self.attention.tensor_map("attention"),
                            "decoder": rnn_tensor_map("decoder", self.decoder),
                            "output.weight": "output.weight", "output.bias": "output.bias"}}


# --- 2. Luong encoder-decoder ------------------------------------------------------------------

class LuongSeq2Seq(Seq2SeqBase):
    """Luong et al. 2015, global attention.

    encoder:  m, (h_n[, c_n]) = RNN_L(src_embedding(x))              unidirectional, L layers
    init:     decoder state = encoder final state (every layer); h~_0 = 0
    step t:   x_t = [tgt_embedding(y_{t-1}); h~_{t-1}]   (input feeding; else embedding only)
              h_t = top layer output of RNN_L(x_t, state)
              e_s = m_s . h_t (dot) | m_s . (W_a h_t) (general) | v . tanh(W_k m_s + W_q h_t)
              (concat)   a = masked softmax(e)   c_t = sum a_s m_s
              h~_t = tanh(W_c [c_t; h_t])        logits_t = W_s h~_t + b_s
    """

    architecture = "luong_seq2seq"

    def __init__(self, src_vocab_size, tgt_vocab_size, embedding_dim=64, hidden=128, layers=1,
                 cell="lstm", score="general", input_feeding=True, attention_dim=None,
                 pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, max_decode_length=32,
                 beam_width=3, length_alpha=DEFAULT_LENGTH_ALPHA):
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        if score not in ("dot", "general", "concat"):
            raise ValueError(f"score must be dot, general or concat, got {score!r}")
        self._init_special(pad_id, bos_id, eos_id, unk_id, max_decode_length, beam_width,
                           length_alpha)
        attention_dim = hidden if attention_dim is None else attention_dim
        self.sizes = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size,
                          embedding_dim=embedding_dim, hidden=hidden, layers=layers, cell=cell,
                          score=score, input_feeding=input_feeding,
                          attention_dim=attention_dim if score == "concat" else None)
        self.cell, self.score, self.input_feeding = cell, score, input_feeding
        self.hidden = hidden
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_dim, padding_idx=pad_id)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, embedding_dim, padding_idx=pad_id)
        self.encoder = _CELLS[cell](embedding_dim, hidden, num_layers=layers, batch_first=True)
        dec_in = embedding_dim + (hidden if input_feeding else 0)
        self.decoder = _CELLS[cell](dec_in, hidden, num_layers=layers, batch_first=True)
        if score == "general":
            self.attention_w = nn.Linear(hidden, hidden, bias=False)
        elif score == "concat":
            self.attention = AdditiveAttention(hidden, hidden, attention_dim, bias=False)
        self.combine = nn.Linear(2 * hidden, hidden, bias=False)
        self.output = nn.Linear(hidden, tgt_vocab_size)

    def encode(self, src, src_lengths):
        check_lengths(src, src_lengths)
        memory, state = run_rnn(self.encoder, self.src_embedding(src), src_lengths)
        state = tuple(state) if self.cell == "lstm" else (state,)
        h_tilde = memory.new_zeros(src.size(0), self.hidden)
        out = {"memory": memory, "mask": length_mask(src_lengths, src.size(1)),
               "state": state + (h_tilde,)}
        if self.score == "concat":
            out["keys"] = self.attention.keys(memory)
        return out

    def step(self, memory, state, prev_tokens):
        rnn_state, h_tilde_prev = state[:-1], state[-1]
        x = self.tgt_embedding(prev_tokens)
        if self.input_feeding:
            x = torch.cat([x, h_tilde_prev], -1)
        out, new = self.decoder(x[:, None, :], rnn_state if self.cell == "lstm" else rnn_state[0])
        new = tuple(new) if self.cell == "lstm" else (new,)
        h = out[:, 0]
        mem = memory["memory"]
        if self.score == "dot":
            scores = torch.bmm(mem, h[:, :, None])[:, :, 0]
        elif self.score == "general":
            scores = torch.bmm(mem, self.attention_w(h)[:, :, None])[:, :, 0]
        else:
            scores = self.attention.scores(memory["keys"], h)
        attn = masked_softmax(scores, memory["mask"])
        context = torch.bmm(attn[:, None, :], mem)[:, 0]
        h_tilde = torch.tanh(self.combine(torch.cat([context, h], -1)))
        return self.output(h_tilde), attn, new + (h_tilde,)

    def config(self):
        s = self.sizes
        tensors = {"src_embedding": "src_embedding.weight",
                   "tgt_embedding": "tgt_embedding.weight",
                   "encoder": rnn_tensor_map("encoder", self.encoder),
                   "decoder": rnn_tensor_map("decoder", self.decoder),
                   "combine.weight": "combine.weight",
                   "output.weight": "output.weight", "output.bias": "output.bias"}
        if self.score == "general":
            tensors["attention.weight"] = "attention_w.weight"
        elif self.score == "concat":
            tensors.update(self.attention.tensor_map("attention"))
        return {"format": FORMAT, "version": VERSION, "architecture": self.architecture,
                "cell": s["cell"], "src_vocab_size": s["src_vocab_size"],
                "tgt_vocab_size": s["tgt_vocab_size"], "embedding_dim": s["embedding_dim"],
                "hidden": s["hidden"], "layers": s["layers"], "score": s["score"],
                "attention_dim": s["attention_dim"], "input_feeding": s["input_feeding"],
                **self._special_config(), "tensors": tensors}


# --- 3 and 4: classifiers ------------------------------------------------------------------------

@dataclass
class ClassifierResult:
    """logits [B, C]; probs = sigmoid or softmax of the logits; pooling [B, T] attention pooling
    weights (None for "last" pooling); self_attention [B, heads, T, T] (self_attention_rnn)."""
    logits: torch.Tensor
    probs: torch.Tensor
    pooling: Optional[torch.Tensor]
    self_attention: Optional[torch.Tensor] = None
    rnn_outputs: Optional[torch.Tensor] = None
    rnn_inputs: Optional[torch.Tensor] = None


class AttentionPooling(nn.Module):
    """u_t = w . tanh(W h_t + b) ("tanh") or u_t = w . h_t ("linear");
    alpha = masked softmax over t; pooled = sum_t alpha_t h_t."""

    def __init__(self, dim, attention_dim, form):
        super().__init__()
        if form not in ("tanh", "linear"):
            raise ValueError(f"pooling score must be 'tanh' or 'linear', got {form!r}")
        self.form = form
        if form == "tanh":
            self.proj = nn.Linear(dim, attention_dim)
            self.w = nn.Parameter(torch.empty(attention_dim).uniform_(-0.1, 0.1))
        else:
            self.w = nn.Parameter(torch.empty(dim).uniform_(-0.1, 0.1))

    def forward(self, h, mask):
        if self.form == "tanh":
            u = torch.tanh(self.proj(h)) @ self.w
        else:
            u = h @ self.w
        alpha = masked_softmax(u, mask)
        return torch.bmm(alpha[:, None, :], h)[:, 0], alpha

    def tensor_map(self, prefix):
        if self.form == "tanh":
            return {"pooling.weight": f"{prefix}.proj.weight",
                    "pooling.bias": f"{prefix}.proj.bias",
                    "pooling.w": f"{prefix}.w"}
        return {"pooling.w": f"{prefix}.w"}


class ClassifierBase(nn.Module):
    def _head_init(self, out_dim, num_classes, output_activation):
        if output_activation not in ("sigmoid", "softmax"):
            raise ValueError(f"output_activation must be sigmoid or softmax, "
                             f"got {output_activation!r}")
        if output_activation == "softmax" and num_classes < 2:
            raise ValueError("softmax needs num_classes >= 2")
        self.output_activation = output_activation
        self.classifier = nn.Linear(out_dim, num_classes)

    def activate(self, logits):
        return torch.sigmoid(logits) if self.output_activation == "sigmoid" else \
            torch.softmax(logits, -1)

    def loss(self, logits, labels):
        """Cross entropy for softmax (labels [B] class ids); binary cross entropy for sigmoid
        (labels [B, C] of 0/1, or [B] of 0/1 when C == 1)."""
        if self.output_activation == "softmax":
            return F.cross_entropy(logits, labels)
        labels = labels.float().reshape(logits.shape)
        return F.binary_cross_entropy_with_logits(logits, labels)

    @torch.no_grad()
    def predict(self, tokens, lengths):
        return self(tokens, lengths)


class RnnAttentionClassifier(ClassifierBase):
    """embedding -> RNN (L layers, optionally bidirectional) -> attention pooling over the valid
    steps -> logits = W_c pooled + b_c -> sigmoid or softmax."""

    architecture = "rnn_attention_classifier"

    def __init__(self, vocab_size, num_classes, embedding_dim=64, hidden=64, layers=1,
                 bidirectional=True, cell="lstm", pooling_score="tanh", attention_dim=64,
                 output_activation="softmax", pad_id=PAD, unk_id=UNK):
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        self.pad_id, self.unk_id = pad_id, unk_id
        self.sizes = dict(cell=cell, vocab_size=vocab_size, embedding_dim=embedding_dim,
                          hidden=hidden, layers=layers, bidirectional=bidirectional,
                          pooling_score=pooling_score,
                          attention_dim=attention_dim if pooling_score == "tanh" else None,
                          num_classes=num_classes, output_activation=output_activation)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.rnn = _CELLS[cell](embedding_dim, hidden, num_layers=layers, batch_first=True,
                                bidirectional=bidirectional)
        dim = hidden * (2 if bidirectional else 1)
        self.pooling = AttentionPooling(dim, attention_dim, pooling_score)
        self._head_init(dim, num_classes, output_activation)

    def forward(self, tokens, lengths):
        check_lengths(tokens, lengths, "tokens")
        x = self.embedding(tokens)
        h, _ = run_rnn(self.rnn, x, lengths)
        pooled, alpha = self.pooling(h, length_mask(lengths, tokens.size(1)))
        logits = self.classifier(pooled)
        return ClassifierResult(logits, self.activate(logits), alpha, rnn_outputs=h)

    def config(self):
        return {"format": FORMAT, "version": VERSION, "architecture": self.architecture,
                **self.sizes, "special_tokens": {"pad": self.pad_id, "unk": self.unk_id},
                "tensors": {"embedding": "embedding.weight",
                            "rnn": rnn_tensor_map("rnn", self.rnn),
                            **self.pooling.tensor_map("pooling"),
                            "classifier.weight": "classifier.weight",
                            "classifier.bias": "classifier.bias"}}


class SelfAttentionRnn(ClassifierBase):
    """x = embedding(tokens) (+ sinusoidal PE); multi-head scaled dot-product self-attention
    (Q/K/V projections + output projection, or identity); y = x + attn(x) (residual) or attn(x);
    RNN over y; pooling = top layer's final state(s) ("last") or attention pooling; dense head.
    Padded positions (t >= length) of x, attn(x) and y are zero."""

    architecture = "self_attention_rnn"

    def __init__(self, vocab_size, num_classes, embedding_dim=64, heads=1,
                 attention_projections=True, positional_encoding=True, residual=True,
                 hidden=64, layers=1, bidirectional=False, cell="gru", pooling="last",
                 pooling_score="tanh", attention_dim=64, output_activation="softmax",
                 max_positions=512, pad_id=PAD, unk_id=UNK):
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        if embedding_dim % heads:
            raise ValueError(f"embedding_dim {embedding_dim} is not a multiple of heads {heads}")
        if pooling not in ("last", "attention"):
            raise ValueError(f"pooling must be 'last' or 'attention', got {pooling!r}")
        self.pad_id, self.unk_id = pad_id, unk_id
        self.heads, self.projections = heads, attention_projections
        self.use_pe, self.residual, self.pooling_kind = positional_encoding, residual, pooling
        self.cell, self.bidirectional = cell, bidirectional
        self.sizes = dict(cell=cell, vocab_size=vocab_size, embedding_dim=embedding_dim,
                          heads=heads, attention_projections=attention_projections,
                          positional_encoding=positional_encoding, residual=residual,
                          hidden=hidden, layers=layers, bidirectional=bidirectional,
                          pooling=pooling,
                          pooling_score=pooling_score if pooling == "attention" else None,
                          attention_dim=attention_dim if pooling == "attention"
                          and pooling_score == "tanh" else None,
                          num_classes=num_classes, output_activation=output_activation,
                          max_positions=max_positions)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        if positional_encoding:
            self.register_buffer("pe", sinusoidal_encoding(max_positions, embedding_dim),
                                 persistent=False)
        if attention_projections:
            self.q_proj = nn.Linear(embedding_dim, embedding_dim)
            self.k_proj = nn.Linear(embedding_dim, embedding_dim)
            self.v_proj = nn.Linear(embedding_dim, embedding_dim)
            self.out_proj = nn.Linear(embedding_dim, embedding_dim)
        self.rnn = _CELLS[cell](embedding_dim, hidden, num_layers=layers, batch_first=True,
                                bidirectional=bidirectional)
        dim = hidden * (2 if bidirectional else 1)
        if pooling == "attention":
            self.pooling = AttentionPooling(dim, attention_dim, pooling_score)
        self._head_init(dim, num_classes, output_activation)

    def self_attention(self, x, mask):
        """(output [B, T, E] with zero rows past the length, weights [B, heads, T, T])."""
        batch, steps, dim = x.shape
        hd = dim // self.heads
        if self.projections:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:
            q = k = v = x
        split = lambda t: t.reshape(batch, steps, self.heads, hd).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)
        weights = masked_softmax(scores, mask[:, None, None, :])
        weights = weights * mask[:, None, :, None]  # query rows past the length: zero
        out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, steps, dim)
        if self.projections:
            out = self.out_proj(out)
        return out * mask[:, :, None], weights

    def forward(self, tokens, lengths):
        check_lengths(tokens, lengths, "tokens")
        steps = tokens.size(1)
        if self.use_pe and not tracing() and steps > self.pe.size(0):
            raise ValueError(f"sequence of {steps} steps exceeds max_positions {self.pe.size(0)}")
        mask = length_mask(lengths, steps)
        x = self.embedding(tokens)
        if self.use_pe:
            x = x + self.pe[:steps][None]
        x = x * mask[:, :, None]
        a, weights = self.self_attention(x, mask)
        y = x + a if self.residual else a
        h, state = run_rnn(self.rnn, y, lengths)
        if self.pooling_kind == "last":
            h_n = state[0] if self.cell == "lstm" else state
            pooled = torch.cat([h_n[-2], h_n[-1]], -1) if self.bidirectional else h_n[-1]
            alpha = None
        else:
            pooled, alpha = self.pooling(h, mask)
        logits = self.classifier(pooled)
        return ClassifierResult(logits, self.activate(logits), alpha, weights, h, y)

    def config(self):
        tensors = {"embedding": "embedding.weight"}
        if self.projections:
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                tensors[f"{name}.weight"] = f"{name}.weight"
                tensors[f"{name}.bias"] = f"{name}.bias"
        tensors["rnn"] = rnn_tensor_map("rnn", self.rnn)
        if self.pooling_kind == "attention":
            tensors.update(self.pooling.tensor_map("pooling"))
        tensors["classifier.weight"] = "classifier.weight"
        tensors["classifier.bias"] = "classifier.bias"
        return {"format": FORMAT, "version": VERSION, "architecture": self.architecture,
                **self.sizes, "special_tokens": {"pad": self.pad_id, "unk": self.unk_id},
                "tensors": tensors}


ARCHITECTURES = {cls.architecture: cls for cls in
                 (BahdanauSeq2Seq, LuongSeq2Seq, RnnAttentionClassifier, SelfAttentionRnn)}


def build_from_config(config):
    """An untrained module with the sizes of a model.json config (weights to be loaded)."""
    arch = config.get("architecture")
    if config.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} config (format = {config.get('format')!r})")
    if config.get("version") != VERSION:
        raise ValueError(f"unsupported {FORMAT} version {config.get('version')!r} "
                         f"(this reader knows {VERSION})")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    sp = config["special_tokens"]
    if arch == "bahdanau_seq2seq":
        if config.get("decoder_layers", 1) != 1:
            raise ValueError("bahdanau_seq2seq: decoder_layers must be 1")
        return BahdanauSeq2Seq(
            config["src_vocab_size"], config["tgt_vocab_size"], config["embedding_dim"],
            config["encoder_hidden"], config["decoder_hidden"], config["attention_dim"],
            config["encoder_layers"], config["cell"], sp["pad"], sp["bos"], sp["eos"],
            sp["unk"], config["max_decode_length"], config["beam"]["width"],
            config["beam"]["length_alpha"])
    if arch == "luong_seq2seq":
        return LuongSeq2Seq(
            config["src_vocab_size"], config["tgt_vocab_size"], config["embedding_dim"],
            config["hidden"], config["layers"], config["cell"], config["score"],
            config["input_feeding"], config.get("attention_dim"), sp["pad"], sp["bos"],
            sp["eos"], sp["unk"], config["max_decode_length"], config["beam"]["width"],
            config["beam"]["length_alpha"])
    if arch == "rnn_attention_classifier":
        return RnnAttentionClassifier(
            config["vocab_size"], config["num_classes"], config["embedding_dim"],
            config["hidden"], config["layers"], config["bidirectional"], config["cell"],
            config["pooling_score"], config.get("attention_dim") or 1,
            config["output_activation"], sp["pad"], sp["unk"])
    return SelfAttentionRnn(
        config["vocab_size"], config["num_classes"], config["embedding_dim"], config["heads"],
        config["attention_projections"], config["positional_encoding"], config["residual"],
        config["hidden"], config["layers"], config["bidirectional"], config["cell"],
        config["pooling"], config.get("pooling_score") or "tanh",
        config.get("attention_dim") or 1, config["output_activation"],
        config["max_positions"], sp["pad"], sp["unk"])
