#include "heatmap.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include "font5x7.hpp"

namespace vkrnn::samples {
namespace {

constexpr bool ascii_table_in_order() {
  for (std::size_t i = 0; i < sizeof(kAsciiGlyphs) / sizeof(kAsciiGlyphs[0]); ++i) {
    if (kAsciiGlyphs[i].ch != static_cast<char>(0x20 + i)) return false;
    for (const char* row : kAsciiGlyphs[i].rows) {
      for (int x = 0; x < 5; ++x) {
        if (row[x] != '#' && row[x] != '.') return false;
      }
      if (row[5] != '\0') return false;
    }
  }
  return true;
}
static_assert(ascii_table_in_order(), "font5x7.hpp: glyphs out of order or malformed");

struct Rgb {
  std::uint8_t r, g, b;
};
constexpr Rgb kWhite{255, 255, 255};
constexpr Rgb kInk{30, 30, 30};
constexpr Rgb kGrey{150, 150, 150};
constexpr Rgb kGridGap{235, 235, 235};

// Text is drawn at twice the font's size: 10x14 pixel glyphs, 12 pixels apart.
constexpr int kScale = 2;
constexpr int kGlyphW = 5 * kScale, kGlyphH = 7 * kScale, kAdvance = 6 * kScale;
constexpr int kLine = 9 * kScale;
constexpr int kCell = 24;    // heatmap cell, pixels
constexpr int kMargin = 16;
constexpr int kBarWidth = 16;

const Glyph& glyph(char c) {
  for (const auto& g : kExtraGlyphs) {
    if (g.ch == c) return g;
  }
  const auto u = static_cast<unsigned char>(c);
  if (u < 0x20 || u > 0x7E) return kAsciiGlyphs['?' - 0x20];
  return kAsciiGlyphs[u - 0x20];
}

// Viridis at nine evenly spaced points, interpolated linearly: perceptually ordered and
// readable in greyscale and by most colour-blind readers.
Rgb viridis(float v) {
  static constexpr std::array<Rgb, 9> stops{{{68, 1, 84},
                                             {71, 44, 122},
                                             {59, 81, 139},
                                             {44, 113, 142},
                                             {33, 144, 141},
                                             {39, 173, 129},
                                             {92, 200, 99},
                                             {170, 220, 50},
                                             {253, 231, 37}}};
  if (!(v >= 0.0f)) v = 0.0f;  // NaN too
  v = std::min(v, 1.0f) * 8.0f;
  const int i = std::min(static_cast<int>(v), 7);
  const float f = v - static_cast<float>(i);
  auto mix = [f](std::uint8_t a, std::uint8_t b) {
    return static_cast<std::uint8_t>(std::lround(a + (b - a) * f));
  };
  return {mix(stops[i].r, stops[i + 1].r), mix(stops[i].g, stops[i + 1].g), mix(stops[i].b, stops[i + 1].b)};
}

class Canvas {
 public:
  Canvas(int width, int height) : w_(width), h_(height), px_(std::size_t(width) * height * 3, 255) {}

  void rect(int x, int y, int w, int h, Rgb c) {
    for (int yy = std::max(y, 0); yy < std::min(y + h, h_); ++yy) {
      for (int xx = std::max(x, 0); xx < std::min(x + w, w_); ++xx) {
        auto* p = &px_[(std::size_t(yy) * w_ + xx) * 3];
        p[0] = c.r;
        p[1] = c.g;
        p[2] = c.b;
      }
    }
  }

  void character(int x, int y, char ch, Rgb c) {
    const Glyph& g = glyph(ch);
    for (int row = 0; row < 7; ++row) {
      for (int col = 0; col < 5; ++col) {
        if (g.rows[row][col] == '#') rect(x + col * kScale, y + row * kScale, kScale, kScale, c);
      }
    }
  }

  void text(int x, int y, const std::string& s, Rgb c) {
    for (char ch : s) {
      character(x, y, ch, c);
      x += kAdvance;
    }
  }

  int width() const { return w_; }
  int height() const { return h_; }
  const std::uint8_t* data() const { return px_.data(); }

 private:
  int w_, h_;
  std::vector<std::uint8_t> px_;
};

int text_width(const std::string& s) { return static_cast<int>(s.size()) * kAdvance; }

// Panel geometry, computed once for sizing and drawing.
struct Layout {
  int grid_x, grid_y, bar_x, width, height;
};

Layout layout(const AttentionPanel& p) {
  Layout l{};
  l.grid_x = kMargin + kGlyphW + 10;
  l.grid_y = kLine + 10 + kGlyphH + 8;  // title, gap, column labels, gap
  const int grid_w = static_cast<int>(p.columns.size()) * kCell;
  const int grid_h = static_cast<int>(p.rows.size()) * kCell;
  l.bar_x = l.grid_x + grid_w + 20;
  const int tick_labels_end = l.bar_x + kBarWidth + 8 + text_width("0.5");
  l.width = std::max(tick_labels_end, kMargin + text_width(p.title)) + kMargin;
  l.height = kMargin / 2 + l.grid_y + std::max(grid_h, 3 * kLine) + kMargin;  // top pad included
  return l;
}

void draw_panel(Canvas& c, int top, const AttentionPanel& p) {
  const Layout l = layout(p);
  c.text(kMargin, top, p.title, kInk);
  const int cols = static_cast<int>(p.columns.size()), rows = static_cast<int>(p.rows.size());
  const int label_y = top + kLine + 10;
  const int gy = top + l.grid_y;
  for (int j = 0; j < cols; ++j) {
    c.character(l.grid_x + j * kCell + (kCell - kGlyphW) / 2, label_y, p.columns[j],
                p.columns[j] == kVisibleSpace || p.columns[j] == kEndOfSequence ? kGrey : kInk);
  }
  c.rect(l.grid_x - 1, gy - 1, cols * kCell + 1, rows * kCell + 1, kGridGap);
  for (int i = 0; i < rows; ++i) {
    c.character(kMargin, gy + i * kCell + (kCell - kGlyphH) / 2, p.rows[i],
                p.rows[i] == kEndOfSequence ? kGrey : kInk);
    for (int j = 0; j < cols; ++j) {
      // One pixel of gap between cells keeps neighbouring weights apart.
      c.rect(l.grid_x + j * kCell, gy + i * kCell, kCell - 1, kCell - 1,
             viridis(p.weights[std::size_t(i) * cols + j]));
    }
  }
  // Colour scale: 1 at the top, 0 at the bottom, ticks at 0, 0.5 and 1.
  const int bar_h = std::max(rows * kCell, 3 * kLine);
  for (int y = 0; y < bar_h; ++y) {
    c.rect(l.bar_x, gy + y, kBarWidth, 1, viridis(1.0f - float(y) / float(bar_h - 1)));
  }
  const std::array<std::pair<float, const char*>, 3> ticks{{{1.0f, "1"}, {0.5f, "0.5"}, {0.0f, "0"}}};
  for (const auto& [v, label] : ticks) {
    const int y = gy + static_cast<int>(std::lround((1.0f - v) * float(bar_h - 1)));
    c.rect(l.bar_x + kBarWidth, y, 4, 1, kInk);
    const int ty = std::clamp(y - kGlyphH / 2, gy, gy + bar_h - kGlyphH);
    c.text(l.bar_x + kBarWidth + 8, ty, label, kInk);
  }
}

}  // namespace

void write_attention_png(const std::string& path, const std::vector<std::string>& caption,
                         const std::vector<AttentionPanel>& panels) {
  int width = 0;
  for (const auto& line : caption) width = std::max(width, 2 * kMargin + text_width(line));
  int height = kMargin + static_cast<int>(caption.size()) * kLine + 8;
  for (const auto& p : panels) {
    if (p.weights.size() != p.rows.size() * p.columns.size()) {
      throw std::invalid_argument("heatmap panel '" + p.title + "': " + std::to_string(p.weights.size()) +
                                  " weights for " + std::to_string(p.rows.size()) + " x " +
                                  std::to_string(p.columns.size()) + " labels");
    }
    const Layout l = layout(p);
    width = std::max(width, l.width);
    height += l.height + 1;
  }
  Canvas canvas(width, height);
  int y = kMargin;
  for (const auto& line : caption) {
    canvas.text(kMargin, y, line, kInk);
    y += kLine;
  }
  y += 8;
  for (const auto& p : panels) {
    canvas.rect(0, y, width, 1, kGridGap);  // separates the panels
    y += 1;
    draw_panel(canvas, y + kMargin / 2, p);
    y += layout(p).height;
  }
  if (stbi_write_png(path.c_str(), canvas.width(), canvas.height(), 3, canvas.data(), canvas.width() * 3) == 0) {
    throw std::runtime_error("cannot write the heatmap to '" + path + "'");
  }
}

}  // namespace vkrnn::samples
