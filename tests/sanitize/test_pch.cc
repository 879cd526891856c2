// The translation unit that builds the sanitizer trees' precompiled header for the tests
// (tests/CMakeLists.txt, tandem_test_pch); it has nothing of its own.
