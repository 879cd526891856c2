#include "models/tokenizer.h"

namespace tandem {

void ByteTokenizer::EncodeAppend(std::string_view text, std::vector<int32_t>* out) {
  out->reserve(out->size() + text.size());
  for (unsigned char c : text) {
    if (c != 0) out->push_back(static_cast<int32_t>(c));
  }
}

std::vector<int32_t> ByteTokenizer::Encode(std::string_view text) {
  std::vector<int32_t> out;
  EncodeAppend(text, &out);
  return out;
}

std::string ByteTokenizer::Decode(const int32_t* tokens, size_t n) {
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (tokens[i] > 0 && tokens[i] < kVocabSize) out.push_back(static_cast<char>(tokens[i]));
  }
  return out;
}

std::string ByteTokenizer::Decode(const std::vector<int32_t>& tokens) {
  return Decode(tokens.data(), tokens.size());
}

}  // namespace tandem
