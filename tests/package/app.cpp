// A C++ program using an installed (or add_subdirectory'd) vkrnn: decodes one date with the dates
// sample's model and checks the answer and the library's version. Usage: app MODEL_DIR
#include <cstdio>
#include <string>

#include <vkrnn/seq2seq.hpp>
#include <vkrnn/version.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  try {
    vkrnn::Context ctx;
    const auto model = vkrnn::Seq2Seq::load(ctx, argv[1]);
    const std::string out = model.translate({"Nov 21st, 2026"}).at(0);
    std::printf("vkrnn %s (headers %s) on %s: 'Nov 21st, 2026' -> '%s'\n", vkrnn::version(), VKRNN_VERSION_STRING,
                ctx.device().name.c_str(), out.c_str());
    return out == "2026-11-21" && vkrnn::version_number() == VKRNN_VERSION ? 0 : 1;
  } catch (const vkrnn::Error& e) {
    std::fprintf(stderr, "error (%s): %s\n", vkrnn::to_string(e.code()), e.what());
    return 1;
  }
}
