// The byte-level tokenizer every tandem model shares: token = byte value, vocabulary 256, so the
// logits of models of any size line up position for position. Byte 0 (NUL), which never occurs
// in text, is the end-of-text token that separates records in a token stream.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

class ByteTokenizer {
 public:
  static constexpr int kVocabSize = 256;
  static constexpr int32_t kEndOfText = 0;

  // Bytes as tokens. NUL bytes in the input are dropped (they are reserved for end-of-text).
  static std::vector<int32_t> Encode(std::string_view text);
  // Appends Encode(text) to `out`.
  static void EncodeAppend(std::string_view text, std::vector<int32_t>* out);
  // Tokens as bytes; end-of-text and out-of-range tokens are skipped.
  static std::string Decode(const std::vector<int32_t>& tokens);
  static std::string Decode(const int32_t* tokens, size_t n);
};

}  // namespace tandem
