#ifndef LF_CORE_MEMSTAT_H
#define LF_CORE_MEMSTAT_H

#include <stddef.h>

/* Peak resident memory of this process since it started (VmHWM from
 * /proc/self/status), or 0 where that is not available. Unlike getrusage's
 * ru_maxrss it does not include the parent's memory before exec. */
size_t lf_peak_rss_bytes(void);

#endif
