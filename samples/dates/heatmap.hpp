#pragma once
// Attention heatmaps as PNG images: one panel per decoded input, stacked vertically; in each,
// the input characters label the columns, the output characters label the rows, and a colour
// scale (viridis, 0 to 1) sits on the right. Labels use the 5x7 font in font5x7.hpp.
#include <string>
#include <vector>

namespace vkrnn::samples {

struct AttentionPanel {
  std::string title;         // printable ASCII; anything else is drawn as '?'
  std::string columns;       // one label character per input position (kVisibleSpace, kEndOfSequence allowed)
  std::string rows;          // one label character per output step
  std::vector<float> weights;  // [rows.size(), columns.size()], row-major, values in [0, 1]
};

// Writes the panels under a caption. Throws std::runtime_error naming the path when the file
// cannot be written, std::invalid_argument when a panel's weights do not match its labels.
void write_attention_png(const std::string& path, const std::vector<std::string>& caption,
                         const std::vector<AttentionPanel>& panels);

}  // namespace vkrnn::samples
