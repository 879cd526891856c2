// Alignment maps: validation, the child's shape, the per-tensor index sets, the JSON form in a
// checkpoint's metadata and its round trip; corrupted maps are refused with a clear error.
#include "prune/alignment_map.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"
#include "prune/extract.h"
#include "tests/prune/prune_test_util.h"
#include "tests/temp_dir.h"

namespace tandem {
namespace {

using testing::TinyConfig;

// A non-uniform child: drops block 1, keeps 12 of 16 channels, 2 and 3 heads, 20 and 7 neurons.
AlignmentMap SampleMap() {
  AlignmentMap m;
  m.parent = TinyConfig();
  m.layers = {0, 2};
  m.channels = {0, 1, 2, 3, 5, 6, 7, 8, 10, 12, 13, 15};
  m.heads = {{1, 3}, {0, 1, 2}};
  m.neurons = {{0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24, 40, 41, 42, 60, 63},
               {5, 6, 7, 8, 9, 30, 31}};
  return m;
}

TEST(AlignmentMapTest, IdentityIsValidAndItsChildIsTheParent) {
  const ModelConfig p = TinyConfig();
  const AlignmentMap id = AlignmentMap::Identity(p);
  ASSERT_TRUE(id.Validate().ok());
  EXPECT_EQ(id.ChildConfig(), p);
  const std::vector<size_t> offsets = ParentOffsets(id);
  ASSERT_EQ(offsets.size(), GptLayout(p).total());
  for (size_t i = 0; i < offsets.size(); ++i) ASSERT_EQ(offsets[i], i);
}

TEST(AlignmentMapTest, ChildConfigFollowsTheMap) {
  const ModelConfig c = SampleMap().ChildConfig();
  ASSERT_TRUE(c.Validate().ok());
  EXPECT_EQ(c.d_model, 12);
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.head_dim(), 4);
  EXPECT_EQ(c.heads(0), 2);
  EXPECT_EQ(c.heads(1), 3);
  EXPECT_EQ(c.mlp_width(0), 20);
  EXPECT_EQ(c.mlp_width(1), 7);
  EXPECT_EQ(c.vocab, 32);
  EXPECT_EQ(c.context, 16);
}

TEST(AlignmentMapTest, TensorAlignmentsName) {
  const std::vector<TensorAlignment> t = TensorAlignments(SampleMap());
  const ParamLayout child = GptLayout(SampleMap().ChildConfig());
  ASSERT_EQ(t.size(), child.tensors().size());
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(t[i].child_name, child.tensors()[i].name);
    ASSERT_EQ(t[i].index.size(), child.tensors()[i].shape.size());
    for (size_t d = 0; d < t[i].index.size(); ++d) {
      EXPECT_EQ(static_cast<int64_t>(t[i].index[d].size()), child.tensors()[i].shape[d])
          << t[i].child_name;
    }
  }
  // Child block 1 is parent block 2; its c_attn columns are heads 0..2 of q, k and v (A = 16).
  const TensorAlignment* qkv = nullptr;
  for (const auto& a : t) {
    if (a.child_name == "h.1.attn.c_attn.weight") qkv = &a;
  }
  ASSERT_NE(qkv, nullptr);
  EXPECT_EQ(qkv->parent_name, "h.2.attn.c_attn.weight");
  ASSERT_EQ(qkv->index[1].size(), 36u);
  EXPECT_EQ(qkv->index[1][0], 0);
  EXPECT_EQ(qkv->index[1][11], 11);
  EXPECT_EQ(qkv->index[1][12], 16);  // k of head 0
  EXPECT_EQ(qkv->index[1][24], 32);  // v of head 0
  EXPECT_EQ(qkv->index[0][4], 5);    // channel 4 of the child is parent channel 5
}

TEST(AlignmentMapTest, ParentOffsetsAreInjective) {
  std::vector<size_t> o = ParentOffsets(SampleMap());
  std::sort(o.begin(), o.end());
  EXPECT_TRUE(std::adjacent_find(o.begin(), o.end()) == o.end());
  EXPECT_LT(o.back(), GptLayout(TinyConfig()).total());
}

TEST(AlignmentMapTest, ValidateNamesWhatIsWrong) {
  auto expect_error = [](AlignmentMap m, const std::string& needle) {
    const Status s = m.Validate();
    ASSERT_FALSE(s.ok()) << needle;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  AlignmentMap m = SampleMap();
  m.layers = {2, 0};
  expect_error(m, "layers is not ascending");
  m = SampleMap();
  m.channels.push_back(16);
  expect_error(m, "channels holds index 16");
  m = SampleMap();
  m.heads[1] = {0, 0};
  expect_error(m, "heads[1]");
  m = SampleMap();
  m.neurons[0].clear();
  expect_error(m, "neurons[0] (parent block 0) is empty");
  m = SampleMap();
  m.heads.pop_back();
  expect_error(m, "one entry per kept block");
}

TEST(AlignmentMapTest, JsonRoundTrip) {
  const AlignmentMap m = SampleMap();
  const std::string json = AlignmentMapToJson(m);
  // Runs keep it compact: channel 0..3 is one run.
  EXPECT_NE(json.find("[[0,4],[5,9]"), std::string::npos) << json;
  StatusOr<AlignmentMap> back = AlignmentMapFromJson(json, "test");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, m);
  // A non-uniform parent round-trips too.
  AlignmentMap of_child = AlignmentMap::Identity(m.ChildConfig());
  StatusOr<AlignmentMap> back2 = AlignmentMapFromJson(AlignmentMapToJson(of_child), "test");
  ASSERT_TRUE(back2.ok()) << back2.status().ToString();
  EXPECT_EQ(*back2, of_child);
}

TEST(AlignmentMapTest, CorruptedJsonIsRefused) {
  const std::string good = AlignmentMapToJson(SampleMap());
  auto refuse = [](std::string json, const std::string& needle) {
    StatusOr<AlignmentMap> m = AlignmentMapFromJson(json, "child.safetensors");
    ASSERT_FALSE(m.ok()) << json;
    EXPECT_EQ(m.status().code(), StatusCode::kCorruption);
    EXPECT_NE(m.status().message().find("child.safetensors"), std::string::npos);
    EXPECT_NE(m.status().message().find(needle), std::string::npos) << m.status().message();
  };
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  refuse("{not json", "not a JSON object");
  refuse(replace("\"version\":1", "\"version\":2"), "version 1");
  refuse(replace("\"layers\":[0,2]", "\"layers\":[0,3]"), "'layers' holds 3");
  refuse(replace("\"layers\":[0,2]", "\"layers\":[2,0]"), "not ascending");
  refuse(replace("[[0,4],[5,9]", "[[0,4],[3,9]"), "not ascending");   // overlapping runs
  refuse(replace("[[0,4],[5,9]", "[[0,4],[5,99]"), "outside [0, 16)");  // past d_model
  refuse(replace("[[0,4],[5,9]", "[[0,4],[9,5]"), "empty");             // reversed run
  refuse(replace("[[0,4],[5,9]", "[[0,4],[5,\"x\"]"), "not a [begin, end) pair");
  refuse(replace("\"heads\":[[[1,2],[3,4]],", "\"heads\":["), "one entry per kept block");
  refuse(replace("\"d_model\":16", "\"d_model\":-1"), "out of range");
  refuse(replace("\"layer_n_head\":[4,4,4]", "\"layer_n_head\":[4,4]"), "layer_n_head");
}

class AlignmentFileTest : public testing::TempDirTest {};

TEST_F(AlignmentFileTest, SavedChildCarriesItsMap) {
  auto parent = testing::RandomWeights(TinyConfig(), 1);
  const AlignmentMap map = SampleMap();
  StatusOr<std::unique_ptr<GptWeights>> child = Extract(*parent, map);
  ASSERT_TRUE(child.ok());
  const std::string path = Path("child.safetensors");
  ASSERT_TRUE(SavePrunedGpt(path, **child, map, {{"note", "x"}}).ok());
  StatusOr<AlignmentMap> back = ReadAlignmentMap(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, map);
  // The checkpoint is an ordinary model to LoadGpt, bit for bit.
  StatusOr<std::unique_ptr<Gpt>> loaded = LoadGpt(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->config(), map.ChildConfig());
  ASSERT_EQ((*loaded)->params().size(), (*child)->params().size());
  EXPECT_EQ(0, std::memcmp((*loaded)->params().data(), (*child)->params().data(),
                           (*child)->params().size() * sizeof(float)));
  // A checkpoint without a map, and a map that does not describe the checkpoint, are refused.
  ASSERT_TRUE(SaveGpt(Path("plain.safetensors"), *parent).ok());
  EXPECT_EQ(ReadAlignmentMap(Path("plain.safetensors")).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(SaveGpt(Path("lying.safetensors"), *parent,
                      {{kAlignmentMetadataKey, AlignmentMapToJson(map)}})
                  .ok());
  StatusOr<AlignmentMap> lying = ReadAlignmentMap(Path("lying.safetensors"));
  ASSERT_FALSE(lying.ok());
  EXPECT_EQ(lying.status().code(), StatusCode::kCorruption);
  EXPECT_NE(lying.status().message().find("another shape"), std::string::npos)
      << lying.status().message();
  // The wrong child for the map is refused at save time.
  EXPECT_FALSE(SavePrunedGpt(Path("wrong.safetensors"), *parent, map).ok());
}

}  // namespace
}  // namespace tandem
