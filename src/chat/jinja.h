/* A Jinja interpreter for the subset that chat templates use, rendering as
 * transformers' apply_chat_template does (Jinja2's ImmutableSandboxedEnvironment
 * with trim_blocks, lstrip_blocks and loop controls; tojson without HTML
 * escaping; raise_exception and strftime_now).
 *
 * A template reaches nothing outside its variables: no files, no imports, no
 * Python attributes. Recursion, loop iterations, evaluation steps, memory and
 * output size are bounded (LF_JINJA_MAX_*); a feature outside the subset is a
 * parse or render error naming the feature and the template line.
 *
 * Every output byte is known to come either from the template (literals,
 * numbers, bos_token, message roles) or from a caller's value marked as
 * content (message text, keyword arguments): the renderer returns the
 * template-made byte ranges so that special tokens can be recognised in them
 * only. */
#ifndef LF_CHAT_JINJA_H
#define LF_CHAT_JINJA_H

#include <stddef.h>
#include <stdint.h>

#include "longflow.h"

#define LF_JINJA_MAX_DEPTH 64             /* macro call nesting and expression nesting */
#define LF_JINJA_MAX_STEPS 20000000L      /* evaluation steps per render */
#define LF_JINJA_MAX_OUTPUT (16u << 20)   /* rendered bytes */
#define LF_JINJA_MAX_MEMORY (256u << 20)  /* bytes of values made during one render */
#define LF_JINJA_MAX_SOURCE (1u << 20)    /* template size */

typedef struct lf_jinja lf_jinja;

/* Parse a template; `name` labels error messages. */
int lf_jinja_parse(const char *src, size_t len, const char *name, lf_jinja **out, lf_error *err);
void lf_jinja_free(lf_jinja *t);

/* One variable passed to the template: a JSON value (object, array, string,
 * number, bool, null). `content` marks its strings as caller content (not
 * template markup); message "role" strings that name a known role stay markup. */
typedef struct lf_jinja_var {
    const char *name;
    const void *json; /* const cJSON * */
    int content;
} lf_jinja_var;

typedef struct lf_jinja_range {
    size_t start, end;
} lf_jinja_range;

/* Render with the given variables (later ones override earlier ones);
 * `now` is strftime_now's clock in seconds since the epoch (local time), or
 * 0 for the current time. *text is malloc'd and NUL-terminated; *markup
 * (malloc'd, sorted, disjoint) lists the byte ranges made by the template. */
int lf_jinja_render(const lf_jinja *t, const lf_jinja_var *vars, int n_vars, int64_t now, char **text,
                    size_t *len, lf_jinja_range **markup, size_t *n_markup, lf_error *err);

/* Python's str.strip() / lstrip() / rstrip() (Jinja's trim): narrow [*a, *b)
 * of s past the whitespace (str.isspace) at its ends. */
void lf_jinja_strip_bounds(const char *s, size_t *a, size_t *b, int left, int right);

#endif
