#include "core/memstat.h"

#include <stdio.h>
#include <string.h>

size_t lf_peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            sscanf(line + 6, "%zu", &kb);
            break;
        }
    fclose(f);
    return kb * 1024;
}
