// Whether the including translation unit is compiled under ThreadSanitizer. gcc says so with
// __SANITIZE_THREAD__, clang only through __has_feature; code that must differ under TSan (an
// ifunc resolver TSan cannot run, hand-overs TSan cannot see, a test's bound on what
// instrumented code costs) tests this macro instead of either compiler's.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define TANDEM_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TANDEM_THREAD_SANITIZER 1
#endif
#endif
