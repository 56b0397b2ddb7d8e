# self-attention: q/k/v stored as float16 (fp32 arithmetic), residual add / positional encoding in place
list(APPEND variants "self_attention_f16|self_attention.comp|FP16_STORAGE=1")
list(APPEND variants "residual_add_inplace|residual_add.comp|IN_PLACE=1")
list(APPEND variants "positional_encoding_inplace|positional_encoding.comp|IN_PLACE=1")
# linear / recurrent: variants without subgroup arithmetic, and fp16 weight storage
list(APPEND variants "gemv_nosubgroup|gemv.comp|USE_SUBGROUP=0")
list(APPEND variants "gemv_f16|gemv.comp|W_F16=1")
list(APPEND variants "gemv_f16_nosubgroup|gemv.comp|W_F16=1,USE_SUBGROUP=0")
list(APPEND variants "gemm_f16|gemm.comp|W_F16=1")
list(APPEND variants "rnn_step_nosubgroup|rnn_step.comp|USE_SUBGROUP=0")
list(APPEND variants "rnn_proj_nosubgroup|rnn_proj.comp|USE_SUBGROUP=0")
list(APPEND variants "rnn_seq_nosubgroup|rnn_seq.comp|USE_SUBGROUP=0")
