/* Names and element sizes of the tensor storage types. */
#include "longflow.h"

const char *lf_dtype_name(lf_dtype t) {
    switch (t) {
    case LF_DTYPE_F32: return "f32";
    case LF_DTYPE_F16: return "f16";
    case LF_DTYPE_BF16: return "bf16";
    }
    return "unknown";
}

size_t lf_dtype_size(lf_dtype t) {
    switch (t) {
    case LF_DTYPE_F32: return 4;
    case LF_DTYPE_F16: return 2;
    case LF_DTYPE_BF16: return 2;
    }
    return 0;
}
