// Linked into every executable of a VKRNN_SANITIZE build (cmake/sanitize.cmake), never into a
// normal one. The Vulkan loader dlclose()s the driver (Mesa's lavapipe, LLVM) and the layers
// when an instance is destroyed; LeakSanitizer reports at exit, when the allocations those
// libraries never freed can no longer be attributed to a module ("<unknown module>"), so they
// could neither be suppressed by library nor told apart from vkrnn's own. Keeping every library
// loaded makes each report name its library (tests/sanitizers/lsan.supp suppresses only the
// driver stack's). The executable's definition interposes the C library's for the loader.
extern "C" int dlclose(void*) { return 0; }
