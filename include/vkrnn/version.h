/* vkrnn's version: the one place it is written (CMakeLists.txt reads it from here). C and C++.
 * VKRNN_VERSION is MAJOR * 10000 + MINOR * 100 + PATCH, for #if comparisons; the library's
 * own version at run time is vkrnn::version() (C++) or vkrnn_version() (C), which may differ
 * from these macros when an app is built against other headers than the library it loads.
 * ABI policy: docs/integration.md. */
#ifndef VKRNN_VERSION_H
#define VKRNN_VERSION_H

#define VKRNN_VERSION_MAJOR 0
#define VKRNN_VERSION_MINOR 1
#define VKRNN_VERSION_PATCH 0

#define VKRNN_VERSION (VKRNN_VERSION_MAJOR * 10000 + VKRNN_VERSION_MINOR * 100 + VKRNN_VERSION_PATCH)
#define VKRNN_VERSION_STRINGIFY2(x) #x
#define VKRNN_VERSION_STRINGIFY(x) VKRNN_VERSION_STRINGIFY2(x)
#define VKRNN_VERSION_STRING                   \
  VKRNN_VERSION_STRINGIFY(VKRNN_VERSION_MAJOR) \
  "." VKRNN_VERSION_STRINGIFY(VKRNN_VERSION_MINOR) "." VKRNN_VERSION_STRINGIFY(VKRNN_VERSION_PATCH)

#endif /* VKRNN_VERSION_H */
