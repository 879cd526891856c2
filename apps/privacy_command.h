// `tandem privacy epsilon|sigma`: the RDP accountant on the command line (privacy/accountant.h),
// so a user can check the ε a run will report, or pick σ for a budget, before starting it.
#pragma once

#include <CLI/CLI.hpp>

namespace tandem {

// Adds the `privacy` subcommand, with `epsilon` and `sigma` under it, to `app`. Their callbacks run
// during app.parse: they print one human-readable line (or one JSON object with --json) on stdout;
// on bad input they print "tandem: error: ..." on stderr and throw CLI::RuntimeError(2), which
// CLI11_PARSE turns into exit status 2. Numbers are parsed by the callbacks themselves, so a
// malformed number or a missing required option also exits with 2.
void AddPrivacyCommands(CLI::App& app);

}  // namespace tandem
