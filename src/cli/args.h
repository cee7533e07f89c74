/* Command-line parsing helpers shared by the longflow subcommands. Every
 * parse error names the flag and the bad value. */
#ifndef LF_CLI_ARGS_H
#define LF_CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>

/* argv cursor: lf_arg_value takes the value after a flag (or after '=' in
 * --flag=value). Returns NULL and prints an error when it is missing. */
typedef struct lf_args {
    int argc;
    char **argv;
    int i;
    const char *cmd;       /* subcommand name, for messages */
    const char *inline_val;/* value given as --flag=value */
} lf_args;

void lf_args_init(lf_args *a, const char *cmd, int argc, char **argv);
/* Next flag, or NULL at the end. Splits --flag=value. */
const char *lf_args_next(lf_args *a);
const char *lf_arg_value(lf_args *a, const char *flag);
/* Typed values with range checks; return false (after printing) on error. */
bool lf_arg_int(lf_args *a, const char *flag, long lo, long hi, int *out);
bool lf_arg_float(lf_args *a, const char *flag, double lo, double hi, float *out);
bool lf_arg_u64(lf_args *a, const char *flag, uint64_t *out);
/* "1,2,3" -> malloc'd int array; every element in [0, limit) (limit_what
 * names that range in the message: "the vocabulary"). An error names the
 * element (1-based) and the range. */
bool lf_parse_ids(const char *cmd, const char *flag, const char *s, long limit, const char *limit_what, int **ids,
                  int *n);

/* Print "longflow <cmd>: <message>" to stderr. */
void lf_cli_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
