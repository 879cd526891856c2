// Which sanitizer the including translation unit is compiled under. gcc says so with
// __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__, clang only through __has_feature; code that must
// differ under a sanitizer (an ifunc resolver TSan cannot run, hand-overs TSan cannot see, a
// test's wall-clock bound on instrumented code) tests these macros instead of either compiler's.
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

namespace tandem {

// True in a sanitizer tree's code (README, "Sanitizers"): instrumented code runs several times
// slower, so a test's bound on elapsed time may scale by kSanitizerSlowdown, never its checks.
#if defined(TANDEM_THREAD_SANITIZER) || defined(TANDEM_ADDRESS_SANITIZER)
inline constexpr bool kUnderSanitizer = true;
inline constexpr int kSanitizerSlowdown = 5;
#else
inline constexpr bool kUnderSanitizer = false;
inline constexpr int kSanitizerSlowdown = 1;
#endif

}  // namespace tandem
