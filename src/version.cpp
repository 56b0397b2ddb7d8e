#include "vkrnn/version.hpp"

namespace vkrnn {

const char* version() noexcept { return VKRNN_VERSION_STRING; }
int version_number() noexcept { return VKRNN_VERSION; }

}  // namespace vkrnn
