#include "cli/input.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "cli/args.h"
#include "core/file.h"

int lf_cli_check_prompt_text(const char *cmd, const char *what, const char *text, size_t len) {
    size_t i = 0;
    while (i < len) {
        if (text[i] == 0) {
            lf_cli_error(cmd, "%s: NUL byte at byte offset %zu (a prompt must be UTF-8 text)", what, i);
            return -1;
        }
        utf8proc_int32_t cp;
        size_t left = len - i;
        utf8proc_ssize_t n =
            utf8proc_iterate((const utf8proc_uint8_t *)text + i, left > 4 ? 4 : (utf8proc_ssize_t)left, &cp);
        if (n <= 0) {
            lf_cli_error(cmd, "%s: invalid UTF-8 at byte offset %zu (byte 0x%02x; a prompt must be UTF-8 text)",
                         what, i, (unsigned char)text[i]);
            return -1;
        }
        i += (size_t)n;
    }
    return 0;
}

int lf_cli_read_prompt_file(const char *cmd, const char *path, char **text, size_t *len) {
    lf_error err = {{0}};
    char *buf = NULL;
    size_t n = 0;
    *text = NULL;
    if (len) *len = 0;
    if (lf_read_file(path, &buf, &n, &err)) {
        lf_cli_error(cmd, "%s", err.msg);
        return -1;
    }
    if (lf_cli_check_prompt_text(cmd, path, buf, n)) {
        free(buf);
        return -1;
    }
    *text = buf;
    if (len) *len = n;
    return 0;
}

int lf_cli_check_model_path(const char *cmd, const char *path, bool flag_given) {
    struct stat sb;
    if (stat(path, &sb) == 0) return 0;
    const char *why = errno == ENOENT || errno == ENOTDIR ? "no such directory or file" : strerror(errno);
    if (flag_given) lf_cli_error(cmd, "--model %s: %s", path, why);
    else lf_cli_error(cmd, "model %s (no --model given: $LONGFLOW_MODEL or the bundled default): %s", path, why);
    return -1;
}
