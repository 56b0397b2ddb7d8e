#pragma once
// The elementwise kernels (shaders/activation.comp, residual_add.comp, positional_encoding.comp,
// sequence_mask.comp, concat.comp, embedding.comp). The _inplace builds have one binding less
// (the output is the first input): each is a declaration of its own.
#include <cstdint>

#include "kernel_flags.h"
#include "ops/kernel_interface.hpp"
#include "reflect/activation.hpp"
#include "reflect/concat.hpp"
#include "reflect/embedding.hpp"
#include "reflect/positional_encoding.hpp"
#include "reflect/residual_add.hpp"
#include "reflect/sequence_mask.hpp"

namespace vkrnn::kernels {

struct Activation {
  VKRNN_KERNEL(activation, "activation")
  struct Push {
    std::uint32_t n;
  };
  VKRNN_PUSH(n)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t FUNC = 0;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (FUNC, 3))
  struct Bindings {
    Tensor xs, outs;
  };
  VKRNN_BINDINGS((xs, read), (outs, write))
};
struct ActivationInPlace {
  VKRNN_KERNEL(activation, "activation_inplace")
  using Push = Activation::Push;
  VKRNN_PUSH(n)
  using Constants = Activation::Constants;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (FUNC, 3))
  struct Bindings {
    Tensor xs;
  };
  VKRNN_BINDINGS((xs, read_write))
};

struct ResidualAdd {
  VKRNN_KERNEL(residual_add, "residual_add")
  struct Push {
    std::uint32_t n;
  };
  VKRNN_PUSH(n)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor as, bs, outs;
  };
  VKRNN_BINDINGS((as, read), (bs, read), (outs, write))
};
struct ResidualAddInPlace {
  VKRNN_KERNEL(residual_add, "residual_add_inplace")
  using Push = ResidualAdd::Push;
  VKRNN_PUSH(n)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor as, bs;
  };
  VKRNN_BINDINGS((as, read_write), (bs, read))
};

struct PositionalEncoding {
  VKRNN_KERNEL(positional_encoding, "positional_encoding")
  struct Push {
    std::uint32_t rows, S, d, pairs, offset;
  };
  VKRNN_PUSH(rows, S, d, pairs, offset)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor xs, turns, outs;
  };
  VKRNN_BINDINGS((xs, read), (turns, read), (outs, write))
};
struct PositionalEncodingInPlace {
  VKRNN_KERNEL(positional_encoding, "positional_encoding_inplace")
  using Push = PositionalEncoding::Push;
  VKRNN_PUSH(rows, S, d, pairs, offset)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor xs, turns;
  };
  VKRNN_BINDINGS((xs, read_write), (turns, read))
};

struct SequenceMask {
  VKRNN_KERNEL(sequence_mask, "sequence_mask")
  struct Push {
    std::uint32_t n, width, steps;
  };
  VKRNN_PUSH(n, width, steps)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor xs, lens, outs;
  };
  VKRNN_BINDINGS((xs, read), (lens, read), (outs, write))
};
struct SequenceMaskInPlace {
  VKRNN_KERNEL(sequence_mask, "sequence_mask_inplace")
  using Push = SequenceMask::Push;
  VKRNN_PUSH(n, width, steps)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor xs, lens;
  };
  VKRNN_BINDINGS((xs, read_write), (lens, read))
};

// Up to four column blocks side by side.
struct Concat {
  VKRNN_KERNEL(concat, "concat")
  struct Push {
    std::uint32_t cols[4], offset[4], ld[4];
    std::uint32_t rows, width, out_offset, out_ld;
  };
  VKRNN_PUSH(cols, offset, ld, rows, width, out_offset, out_ld)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor s0, s1, s2, s3, outs;
  };
  VKRNN_BINDINGS((s0, read), (s1, read), (s2, read), (s3, read), (outs, write))
};

// Rows of a table by id; Push::flags: EMBEDDING_*.
struct Embedding {
  VKRNN_KERNEL(embedding, "embedding")
  struct Push {
    std::uint32_t rows, dim, vocab, table_offset, table_ld, out_offset, out_ld, flags;
  };
  VKRNN_PUSH(rows, dim, vocab, table_offset, table_ld, out_offset, out_ld, flags)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor ids, table, outs, flag;
  };
  VKRNN_BINDINGS((ids, read), (table, read), (outs, write), (flag, read_write))
};

}  // namespace vkrnn::kernels
