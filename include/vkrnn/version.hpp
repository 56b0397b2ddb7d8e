#pragma once
// The version of the vkrnn library an app runs with. The macros in vkrnn/version.h
// (VKRNN_VERSION_MAJOR, _MINOR, _PATCH, VKRNN_VERSION, VKRNN_VERSION_STRING) are those of the
// headers it was compiled against; the two differ when a shared libvkrnn is swapped underneath
// (docs/integration.md says which combinations work).
#include "vkrnn/export.h"
#include "vkrnn/version.h"

namespace vkrnn {

// "MAJOR.MINOR.PATCH" of the library.
VKRNN_API const char* version() noexcept;
// MAJOR * 10000 + MINOR * 100 + PATCH of the library, comparable with VKRNN_VERSION.
VKRNN_API int version_number() noexcept;

}  // namespace vkrnn
