/* The last rows of the model to tokens: final norm, lm_head, the padding
 * bias, the repetition penalty and the sampling kernel; for the prefill's
 * one row and for a decode step's batch (inside its CUDA graph). */
#include "cuda/forward_internal.h"

/* The prompt's last row (of n) to the entry's first token, sampled with
 * stream `seed`; its logits to the host when `logits` is set. */
int prefill_first_token(lf_cuda_backend *b, int entry, int n, uint64_t seed, int *first_token, float *logits,
                        lf_error *err) {
    cudaStream_t s = b->stream;
    void *vs = (void *)s;
    /* the last row: final norm, lm_head, first token */
    if (lf_cuda_rmsnorm(b->x + (size_t)(n - 1) * b->hidden, b->final_norm, 1, b->hidden, b->eps, b->h, vs, err) ||
        lf_cuda_gemm(b->gemm, b->lm_head, b->vocab_pad, b->hidden, b->h, 1, b->logits, LF_DTYPE_F32, 0.f, vs,
                     err))
        return lf_fail_prefix(err, "cuda prefill: logits");
    if (b->vocab_bias && lf_cuda_add_bias(b->logits, b->vocab_bias, 1, b->vocab_pad, vs, err))
        return lf_fail_prefix(err, "cuda prefill: logits");
    if (logits &&
        ck(cudaMemcpyAsync(logits, b->logits, (size_t)b->vocab * 4, cudaMemcpyDeviceToHost, s), err,
           "prefill logits download"))
        return -1;
    b->h_seeds[0] = seed;
    b->h_steps[0] = 0;
    if (ck(cudaMemcpyAsync(b->d_seeds, b->h_seeds, 8, cudaMemcpyHostToDevice, s), err, "seed upload") ||
        ck(cudaMemcpyAsync(b->d_steps, b->h_steps, 4, cudaMemcpyHostToDevice, s), err, "seed upload"))
        return -1;
    if (b->seen) { /* the prompt is the history the first token is penalised against */
        uint32_t *seen_e = b->seen + (size_t)entry * b->seen_words;
        if (lf_cuda_history_reset(seen_e, b->seen_words, b->d_ptok, n, vs, err) ||
            lf_cuda_repetition_penalty(b->logits, 1, b->vocab, b->vocab_pad, b->o.sampling.repetition_penalty,
                                       seen_e, b->seen_words, NULL, NULL, vs, err))
            return lf_fail_prefix(err, "cuda prefill");
    }
    if (lf_cuda_sample(b->logits, 1, b->vocab_pad, &b->o.sampling, b->d_seeds, b->d_steps, b->d_out, b->samp_ws,
                       b->samp_ws_bytes, vs, err))
        return lf_fail_prefix(err, "cuda prefill: sampling");
    if (ck(cudaMemcpyAsync(b->h_out, b->d_out, 4, cudaMemcpyDeviceToHost, s), err, "token download") ||
        ck(cudaStreamSynchronize(s), err, "prefill"))
        return -1;
    *first_token = b->h_out[0]; /* or LF_SAMPLE_NONFINITE */
    return 0;
}

/* The decode step's n rows to sampled tokens in d_out, from the fixed
 * device inputs (d_tokens, d_entries, d_seeds, d_steps); with copy_logits
 * the raw logits are copied to logits_copy before the penalty and sampling. */
int decode_logits_sample(lf_cuda_backend *b, int n, bool copy_logits, prof *pr, lf_error *err) {
    cudaStream_t s = b->stream;
    void *vs = (void *)s;
    prof_mark(pr, s, CAT_OTHER);
    if (lf_cuda_rmsnorm(b->x, b->final_norm, n, b->hidden, b->eps, b->h, vs, err))
        return lf_fail_prefix(err, "cuda decode: final norm");
    prof_mark(pr, s, CAT_GEMM);
    if (lf_cuda_gemm(b->gemm, b->lm_head, b->vocab_pad, b->hidden, b->h, n, b->logits, LF_DTYPE_F32, 0.f, vs, err))
        return lf_fail_prefix(err, "cuda decode: lm_head");
    prof_mark(pr, s, CAT_OTHER);
    if (b->vocab_bias && lf_cuda_add_bias(b->logits, b->vocab_bias, n, b->vocab_pad, vs, err))
        return lf_fail_prefix(err, "cuda decode: logits padding");
    if (copy_logits && ck(cudaMemcpyAsync(b->logits_copy, b->logits, (size_t)n * b->vocab_pad * 4,
                                          cudaMemcpyDeviceToDevice, s),
                          err, "logits copy"))
        return -1;
    /* the step's input token (sampled last) joins its sequence's history first */
    if (b->seen && lf_cuda_repetition_penalty(b->logits, n, b->vocab, b->vocab_pad, b->o.sampling.repetition_penalty,
                                              b->seen, b->seen_words, b->d_entries, b->d_tokens, vs, err))
        return lf_fail_prefix(err, "cuda decode");
    if (lf_cuda_sample(b->logits, n, b->vocab_pad, &b->o.sampling, b->d_seeds, b->d_steps, b->d_out, b->samp_ws,
                       b->samp_ws_bytes, vs, err))
        return lf_fail_prefix(err, "cuda decode: sampling");
    prof_mark(pr, s, CAT_OTHER);
    return 0;
}
