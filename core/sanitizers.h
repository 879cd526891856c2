// Which sanitizer the including translation unit is compiled under. gcc says so with
// __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__, clang only through __has_feature; code that must
// differ under a sanitizer (an ifunc resolver TSan cannot run, hand-overs TSan cannot see, a
// test's bound on what instrumented code costs) tests these macros instead of either compiler's.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define TANDEM_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TANDEM_THREAD_SANITIZER 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TANDEM_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TANDEM_ADDRESS_SANITIZER 1
#endif
#endif
