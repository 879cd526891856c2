// A sanitizer tree's check of itself: each mode commits one defect that its sanitizer must report,
// and the report must end the process with a failure (halt_on_error, -fno-sanitize-recover=all).
// tests/sanitize/canary_test.sh runs a mode and asserts exactly that.
#include <climits>
#include <cstdio>
#include <cstring>
#include <thread>

namespace {

volatile int g_sink;
int g_counter;  // written by two threads without synchronisation in "race"

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s heap-overflow|signed-overflow|leak|race\n", argv[0]);
    return 2;
  }
  const char* mode = argv[1];
  if (std::strcmp(mode, "heap-overflow") == 0) {
    volatile int n = 4;  // unknown to the compiler, so UBSan's object-size check cannot see it first
    int* p = new int[n];
    g_sink = p[n];  // one past the end
    delete[] p;
  } else if (std::strcmp(mode, "signed-overflow") == 0) {
    volatile int x = INT_MAX;
    volatile int one = 1;
    g_sink = x + one;
  } else if (std::strcmp(mode, "leak") == 0) {
    int* volatile p = new int[64];
    p[0] = 1;
    p = nullptr;
    return 0;  // LeakSanitizer reports at exit
  } else if (std::strcmp(mode, "race") == 0) {
    std::thread a([] { for (int i = 0; i < 1000; ++i) g_counter = g_counter + 1; });
    std::thread b([] { for (int i = 0; i < 1000; ++i) g_counter = g_counter + 1; });
    a.join();
    b.join();
    g_sink = g_counter;
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  std::printf("canary survived %s\n", mode);
  return 0;
}
