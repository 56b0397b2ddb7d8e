# self-attention: q/k/v stored as float16 (fp32 arithmetic), residual add / positional encoding in place
list(APPEND variants "self_attention_f16|self_attention.comp|FP16_STORAGE=1")
list(APPEND variants "residual_add_inplace|residual_add.comp|IN_PLACE=1")
list(APPEND variants "positional_encoding_inplace|positional_encoding.comp|IN_PLACE=1")
