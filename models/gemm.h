// Single-precision matrix product on row-major arrays, through OpenBLAS (Debian's OpenMP build,
// so BLAS threads and tandem's own OpenMP loops share one pool and never oversubscribe).
// Inside an OpenMP parallel region it runs on the calling thread alone.
#pragma once

namespace tandem {

// C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C, where op(X) is X or X^T.
// lda, ldb, ldc are row strides in floats of A, B, C as stored.
void Gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);

}  // namespace tandem
