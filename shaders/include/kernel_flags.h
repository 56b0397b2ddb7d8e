// Values of the `flags` and `mode` push constants, in the one syntax GLSL and C++ share: the
// shaders #include this file, and so do their C++ declarations (src/ops/kernels/*.hpp).
#ifndef VKRNN_KERNEL_FLAGS_H
#define VKRNN_KERNEL_FLAGS_H

// attention_softmax.comp and attention_context.comp: Push::mode.
#define TWO_PASS_SINGLE 0u   // the row is one tile: the whole op in one dispatch
#define TWO_PASS_PARTIAL 1u  // pass 1: per-tile partials
#define TWO_PASS_COMBINE 2u  // pass 2: combine the partials

// attention_fused.comp: Push::flags.
#define FUSED_WANT_WEIGHTS 1u  // also write the raw scores (and, direct, the weights)
#define FUSED_DIRECT 2u        // one split: normalise and write the context itself
#define FUSED_QUERY_BIAS 4u    // the kernel projects the query (QP > 0): add qbias

// argmax.comp: Push::flags.
#define ARGMAX_INDEX 1u
#define ARGMAX_VALUE 2u
#define ARGMAX_TOKENS 4u
#define ARGMAX_SCORE 8u
#define ARGMAX_FINISHED 16u
#define ARGMAX_LOGITS 32u
#define ARGMAX_ATTENTION 64u
#define ARGMAX_EMBED 128u
#define ARGMAX_NONFINITE 256u  // flag rows whose max is not finite in `nonfinite`
#define ARGMAX_CHOSEN 512u     // emit chosen[b] where >= 0 (sampled, forced) instead of the argmax

// gemm.comp and gemv.comp: Push::flags.
#define GEMM_BIAS 1u        // add bias[n]
#define GEMM_ACCUMULATE 2u  // add to y (a later slice of K: the host splits K for the loop budget)
#define GEMM_TANH 4u        // epilogue y = f(y) (the last slice of K only): tanh,
#define GEMM_SIGMOID 8u     //   sigmoid
#define GEMM_RELU 16u       //   or relu

// rnn_step.comp, rnn_seq.comp and rnn_proj.comp: Push::flags.
#define RNN_H_ZERO 1u       // h before this step / run is zero (the first, without h0)
#define RNN_C_FROM_C0 2u    // LSTM, the first step / run: c starts from c0 (written to c)
#define RNN_C_ZERO 4u       // LSTM, the first step / run without c0: c starts at zero
#define RNN_NO_LENGTHS 8u   // every row has length T
#define RNN_RAW_H 16u       // rnn_step, LSTM with projection: h goes to out[d][b][j] only
                            // (rnn_proj projects it, carries h and writes the output)
#define RNN_NO_OUT 32u      // a single decoder step: h_next is the only output
#define RNN_X_INLINE 64u    // rnn_step: W_ih x + b_ih computed in the kernel (no xp)

// logits_processor.comp: Push::flags.
#define LOGITS_REPEAT 1u        // repetition penalty on tokens seen after BOS
#define LOGITS_TEMPERATURE 2u
#define LOGITS_NGRAM 4u         // no repeated n-grams (the inputs kept in the history)
#define LOGITS_MIN_LENGTH 8u    // no EOS before min_length
#define LOGITS_UNK 16u          // never the unknown token
#define LOGITS_SUPPRESS 32u     // never the suppressed ids
#define LOGITS_SAMPLE 64u       // sample (top-k, top-p) into chosen[b]
#define LOGITS_PREFIX 128u      // emit the target prefix where it has not ended
#define LOGITS_SEQUENCES 256u   // never the last token of a suppressed sequence whose other
                                // tokens end the history

// embedding.comp: Push::flags.
#define EMBEDDING_REPORT 1u  // report ids outside [0, vocab) in flag[0]

#endif  // VKRNN_KERNEL_FLAGS_H
