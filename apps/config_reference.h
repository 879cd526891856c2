// `tandem config-reference`: every config key with its type, default, range and meaning, as
// Markdown (docs/config.md). The keys, types, defaults and ranges are not written down here: the
// real readers (the coordinator's plan for every registered algorithm, the client's, centralized
// training's) run against a config in describe mode (Config::RecordKeysTo), so the page cannot
// drift from the code. Only the one-line meanings live in a table, and a key without one is an
// error.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/status.h"

namespace tandem {

// Every key the readers asked for, each once (first reader wins), sorted by section and key.
StatusOr<std::vector<ConfigKeyRecord>> RecordConfigKeys();

// The Markdown page; FailedPrecondition naming the keys that have no description, or the
// descriptions whose key no reader reads.
StatusOr<std::string> ConfigReferenceMarkdown(const std::vector<ConfigKeyRecord>& keys);

}  // namespace tandem
