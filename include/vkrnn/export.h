/* VKRNN_API marks vkrnn's public API: what the shared library exports (it is built with hidden
 * visibility, so everything else stays inside it), and on Windows what users import from the
 * DLL. Users of the static library on Windows define VKRNN_STATIC (the CMake target
 * vkrnn::vkrnn_static does). C and C++. */
#ifndef VKRNN_EXPORT_H
#define VKRNN_EXPORT_H

#if defined(_WIN32) || defined(__CYGWIN__)
#if defined(VKRNN_BUILDING)
#define VKRNN_API __declspec(dllexport)
#elif defined(VKRNN_STATIC)
#define VKRNN_API
#else
#define VKRNN_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define VKRNN_API __attribute__((visibility("default")))
#else
#define VKRNN_API
#endif

#endif /* VKRNN_EXPORT_H */
