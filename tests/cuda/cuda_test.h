/* What the GPU tests share: cmocka (or, with -DLF_TEST_STANDALONE, plain
 * main()), a failure count that lets a test report every mismatch before it
 * fails, and CUDA status checks. Each test sets g_have_gpu in main() and
 * skips when it is 0. */
#ifndef LF_TESTS_CUDA_TEST_H
#define LF_TESTS_CUDA_TEST_H

#include <stdio.h>
#include <cuda_runtime_api.h>

#ifdef LF_TEST_STANDALONE
#define SKIP_TEST() return
#define END_TEST(f0) (void)(f0)
#else
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#define SKIP_TEST() skip()
#define END_TEST(f0) assert_int_equal(g_failures, (f0))
#endif

static int g_failures;
static int g_have_gpu;

/* Count a failure with a message and go on. */
#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                           \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            g_failures++;                                                                  \
        }                                                                                  \
    } while (0)

/* main() of a GPU test file of one test function: g_have_gpu set, the test
 * run under cmocka (or alone with -DLF_TEST_STANDALONE). */
#ifdef LF_TEST_STANDALONE
#define CUDA_TEST_MAIN1(test)                                                              \
    int main(void) {                                                                       \
        int n_ = 0;                                                                        \
        g_have_gpu = cudaGetDeviceCount(&n_) == cudaSuccess && n_ > 0;                     \
        if (!g_have_gpu) printf("no CUDA device: skipped\n");                              \
        test(NULL);                                                                        \
        return g_failures ? 1 : 0;                                                         \
    }
#else
#define CUDA_TEST_MAIN1(test)                                                              \
    int main(void) {                                                                       \
        int n_ = 0;                                                                        \
        g_have_gpu = cudaGetDeviceCount(&n_) == cudaSuccess && n_ > 0;                     \
        if (!g_have_gpu) printf("no CUDA device: skipped\n");                              \
        const struct CMUnitTest tests_[] = {cmocka_unit_test(test)};                       \
        return cmocka_run_group_tests(tests_, NULL, NULL);                                 \
    }
#endif

/* A CUDA call that must succeed: count a failure and jump to the caller's
 * `done:` label otherwise. */
#define CUDA_OK(x)                                                                         \
    do {                                                                                   \
        cudaError_t e_ = (x);                                                              \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #x,                 \
                    cudaGetErrorString(e_));                                               \
            g_failures++;                                                                  \
            goto done;                                                                     \
        }                                                                                  \
    } while (0)

#endif
