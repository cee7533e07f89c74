/* Names and sizes of the tensor storage types. */
#include "longflow.h"

const char *lf_dtype_name(lf_dtype t) {
    switch (t) {
    case LF_DTYPE_F32: return "f32";
    case LF_DTYPE_F16: return "f16";
    case LF_DTYPE_BF16: return "bf16";
    case LF_DTYPE_Q8_0: return "q8_0";
    case LF_DTYPE_Q4_0: return "q4_0";
    case LF_DTYPE_Q4_1: return "q4_1";
    case LF_DTYPE_Q4_K: return "q4_k";
    case LF_DTYPE_Q5_K: return "q5_k";
    case LF_DTYPE_Q6_K: return "q6_k";
    case LF_DTYPE_Q5_0: return "q5_0";
    case LF_DTYPE_Q5_1: return "q5_1";
    }
    return "unknown";
}

size_t lf_dtype_size(lf_dtype t) {
    switch (t) {
    case LF_DTYPE_F32: return 4;
    case LF_DTYPE_F16: return 2;
    case LF_DTYPE_BF16: return 2;
    default: return 0;
    }
}

size_t lf_dtype_row_bytes(lf_dtype t, size_t n) {
    switch (t) {
    case LF_DTYPE_Q8_0: return n / 32 * 34;
    case LF_DTYPE_Q4_0: return n / 32 * 18;
    case LF_DTYPE_Q4_1: return n / 32 * 20;
    case LF_DTYPE_Q4_K: return n / 256 * 144;
    case LF_DTYPE_Q5_K: return n / 256 * 176;
    case LF_DTYPE_Q6_K: return n / 256 * 210;
    case LF_DTYPE_Q5_0: return n / 32 * 22;
    case LF_DTYPE_Q5_1: return n / 32 * 24;
    default: return n * lf_dtype_size(t);
    }
}
