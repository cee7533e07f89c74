/* Answer extraction and comparison for math benchmarks: the last \boxed{...}
 * of a generation (balanced braces), compared with the true answer after
 * normalisation. */
#ifndef LF_EVAL_ANSWER_H
#define LF_EVAL_ANSWER_H

#include <stdbool.h>

/* malloc'd content of the last \boxed{...} (or \fbox{...}) in text, or NULL. */
char *lf_extract_boxed(const char *text);

/* malloc'd normalised form of an answer: whitespace removed, \dfrac/\tfrac ->
 * \frac, \left/\right dropped, \text{x} -> x, thousands separators removed
 * from numbers, trailing ".0"/".00" removed, a trailing '.' dropped, "^\circ"
 * and "\%" dropped, outer $...$ removed. */
char *lf_normalize_answer(const char *s);

/* Equal after normalisation (numbers also compared numerically). */
bool lf_answers_match(const char *pred, const char *truth);

#endif
