#ifndef KINEMA_CBLAS_SHIM_H
#define KINEMA_CBLAS_SHIM_H
// Prototypes of the OpenBLAS entry points Kinema uses. CBLAS enums are plain ints in the C ABI
// (CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112).
void cblas_sgemm(int order, int transA, int transB, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
void cblas_dgemm(int order, int transA, int transB, int m, int n, int k, double alpha, const double *a, int lda,
                 const double *b, int ldb, double beta, double *c, int ldc);
void openblas_set_num_threads(int threads);
#endif
