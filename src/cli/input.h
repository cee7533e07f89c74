/* Reading what a user hands the CLI: prompt files (one reader for generate,
 * tokenize, eval and the server) and the --model path. Each prints a
 * one-line error prefixed by the subcommand and returns -1 on bad input. */
#ifndef LF_CLI_INPUT_H
#define LF_CLI_INPUT_H

#include <stdbool.h>
#include <stddef.h>

/* The whole of a prompt file as malloc'd, NUL-terminated UTF-8 text (*len
 * bytes; may be NULL). A NUL byte or invalid UTF-8 is an error naming the
 * file and the byte offset. */
int lf_cli_read_prompt_file(const char *cmd, const char *path, char **text, size_t *len);

/* Check that text (from `what`: "--prompt", a file name) is UTF-8 without
 * NUL bytes; the error names `what` and the byte offset. */
int lf_cli_check_prompt_text(const char *cmd, const char *what, const char *text, size_t len);

/* A --model path must exist (a directory, or a file such as a .gguf); a
 * missing one is "no such directory" rather than the loader's first missing
 * file. flag_given: the path came from --model (else $LONGFLOW_MODEL or the
 * bundled default, which the message says). */
int lf_cli_check_model_path(const char *cmd, const char *path, bool flag_given);

#endif
