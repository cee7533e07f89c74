/* Helpers shared by the libFuzzer harnesses in tests/fuzz/ (not a harness
 * itself: harnesses are the fuzz_*.c files). The loaders under test read
 * model directories, so a harness writes its input's parts as files into a
 * private scratch directory and points the loader at it. */
#ifndef LF_TESTS_FUZZ_HARNESS_H
#define LF_TESTS_FUZZ_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One input holds several files separated by this line (it is in every
 * multi-file harness's dictionary). */
#define LF_FUZZ_SEP "\n--8<--\n"

typedef struct lf_fuzz_part {
    const uint8_t *data;
    size_t size;
} lf_fuzz_part;

/* Split data at LF_FUZZ_SEP into at most max parts; parts not present get
 * size 0 and data NULL. Returns the number of parts found. */
int lf_fuzz_split(const uint8_t *data, size_t size, lf_fuzz_part *parts, int max);

/* The process's scratch directory, created on first use under
 * $LF_FUZZ_SCRATCH, else /dev/shm or /tmp, and removed at a normal exit (a
 * crash leaves it: run.sh points LF_FUZZ_SCRATCH into its own directory). */
const char *lf_fuzz_dir(void);

/* Write (or, with data NULL, remove) dir/name. Aborts on I/O failure: that
 * is the harness's environment failing, not the code under test. */
void lf_fuzz_put(const char *name, const uint8_t *data, size_t size);

/* A NUL-terminated malloc'd copy of data. */
char *lf_fuzz_cstr(const uint8_t *data, size_t size);

/* Where the repository is (LF_SOURCE_DIR in the environment, else the
 * source directory the harness was built from). */
const char *lf_fuzz_source_dir(void);

/* Copy files of the repository (paths relative to it; decompressed with xz
 * when they end in .xz) to the names dsts in the scratch subdirectory sub/.
 * Returns the subdirectory's path, malloc'd. Aborts when a file is
 * missing. */
char *lf_fuzz_stage(const char *sub, const char *const *srcs, const char *const *dsts, int n);

/* Is s valid UTF-8? Is it in Unicode normalization form C? */
bool lf_fuzz_valid_utf8(const uint8_t *s, size_t n);
bool lf_fuzz_is_nfc(const uint8_t *s, size_t n);

/* With LF_FUZZ_VERBOSE=1 in the environment, print why an input was
 * refused (to see which seeds get past the loaders). */
void lf_fuzz_note(const char *what, const char *msg);

#endif
