/* Small file helpers shared by the loaders. */
#ifndef LF_CORE_FILE_H
#define LF_CORE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include "longflow.h"

/* Read a whole file into a NUL-terminated malloc'd buffer. */
int lf_read_file(const char *path, char **out, size_t *len, lf_error *err);
bool lf_file_exists(const char *path);
/* Map a regular file read-only: *map (NULL for an empty file) and *size;
 * release with munmap(*map, *size). */
int lf_map_file(const char *path, void **map, size_t *size, lf_error *err);
/* Join a directory and a file name into a malloc'd path. */
char *lf_path_join(const char *dir, const char *name);

#endif
