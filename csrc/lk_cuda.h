/* lk_cuda.h: what the core and the binding may ask of the CUDA side without
 * including CUDA headers. In a CPU-only build these come from
 * lk_cuda_stub.c and report that CUDA is not built in. */
#ifndef LK_CUDA_H
#define LK_CUDA_H

#include "lk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_cuda_info {
    int compiled;        /* CUDA code is built into this extension */
    int runtime_version; /* e.g. 13000 */
    int driver_version;  /* 0 when no driver */
    int device_count;
    int device;          /* the device used (0) */
    char device_name[256];
    int cc_major, cc_minor;
    int sm_count;
    int arch_supported;  /* machine code or PTX for this device is built in */
    size_t free_bytes, total_bytes;
    char error[512];     /* why no device is usable, if so */
} lk_cuda_info;

void lk_cuda_query(lk_cuda_info *info);
/* the archs compiled in, e.g. "80;86;89;90" (+ "+PTX"), or "" */
const char *lk_cuda_archs(void);
/* LK_OK when device 0 can run this build, else a message with the fix */
lk_status lk_cuda_check_usable(void);

#ifdef __cplusplus
}
#endif
#endif /* LK_CUDA_H */
