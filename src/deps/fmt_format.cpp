// fmt's compiled part, built into vkrnn (cmake/dependencies.cmake) so that libvkrnn needs no
// libfmt to link or run. format-inl.h defines fmt's non-template functions (vformat,
// throw_format_error, ...); the templates fmt's headers declare `extern` or define only in
// format-inl.h are instantiated below, as fmt 9's own src/format.cc does.
#include <fmt/format-inl.h>

#if FMT_VERSION < 90000 || FMT_VERSION >= 100000
#error "src/deps/fmt_format.cpp is for fmt 9; other versions build vkrnn with FMT_HEADER_ONLY"
#endif

FMT_BEGIN_NAMESPACE
namespace detail {

template auto dragonbox::to_decimal(float x) noexcept -> dragonbox::decimal_fp<float>;
template auto dragonbox::to_decimal(double x) noexcept -> dragonbox::decimal_fp<double>;

#ifndef FMT_STATIC_THOUSANDS_SEPARATOR
template locale_ref::locale_ref(const std::locale& loc);
template auto locale_ref::get<std::locale>() const -> std::locale;
#endif

template auto thousands_sep_impl(locale_ref) -> thousands_sep_result<char>;
template auto decimal_point_impl(locale_ref) -> char;
template void buffer<char>::append(const char*, const char*);

}  // namespace detail
FMT_END_NAMESPACE
