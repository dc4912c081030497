/* lk_safetensors.h: a reader for .safetensors files that treats them as
 * hostile input.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON mapping
 * tensor names to {dtype, shape, data_offsets:[begin,end]} (plus an optional
 * "__metadata__" object of strings), then the data. The file is mapped
 * read-only; tensors point into the mapping.
 *
 * Checked on open: N <= LK_ST_MAX_HEADER and inside the file; the header is
 * valid JSON; every entry has a known dtype, at most LK_ST_MAX_DIMS
 * non-negative dims, and offsets with begin <= end <= data size; the byte
 * length equals numel * itemsize (overflow-checked); no two tensors overlap;
 * no name repeats. Each failure names the file and the tensor.
 */
#ifndef LK_SAFETENSORS_H
#define LK_SAFETENSORS_H

#include "lk_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_ST_MAX_HEADER (100u * 1024u * 1024u) /* the reference library's cap */
#define LK_ST_MAX_DIMS 8

typedef enum {
    LK_DT_BF16 = 0,
    LK_DT_F16,
    LK_DT_F32,
    LK_DT_F64,
    LK_DT_I8,
    LK_DT_U8,
    LK_DT_I16,
    LK_DT_U16,
    LK_DT_I32,
    LK_DT_U32,
    LK_DT_I64,
    LK_DT_U64,
    LK_DT_BOOL,
    LK_DT_F8_E4M3,
    LK_DT_F8_E5M2,
    LK_DT_COUNT
} lk_dtype;

const char *lk_dtype_name(int dt);
size_t lk_dtype_size(int dt);

typedef struct lk_st_tensor {
    char *name;       /* owned, NUL-terminated */
    int dtype;        /* lk_dtype */
    int ndim;
    int64_t shape[LK_ST_MAX_DIMS];
    size_t numel;
    const void *data; /* into the mapping; may be unaligned */
    size_t nbytes;
    int file_index;   /* which file of an lk_st_set it came from */
} lk_st_tensor;

typedef struct lk_st_file {
    char *path;          /* owned copy, for messages */
    const unsigned char *map;
    size_t map_len;
    lk_st_tensor *tensors;
    size_t n_tensors;
} lk_st_file;

/* Opens and validates one file. On failure *f is empty. */
lk_status lk_st_open(const char *path, lk_st_file *f);
/* Validates an in-memory image (used by lk_st_open and by the fuzzer). The
 * tensors point into buf, which must outlive *f; `label` names it in errors. */
lk_status lk_st_parse(const unsigned char *buf, size_t len, const char *label, lk_st_file *f);
void lk_st_close(lk_st_file *f);

/* A checkpoint: one or more files (shards) whose names must not repeat. */
typedef struct lk_st_set {
    lk_st_file *files;
    int n_files;
} lk_st_set;

lk_status lk_st_set_open(const char *const *paths, int n_paths, lk_st_set *set);
void lk_st_set_close(lk_st_set *set);
const lk_st_tensor *lk_st_set_find(const lk_st_set *set, const char *name);
const char *lk_st_set_path(const lk_st_set *set, const lk_st_tensor *t);

#ifdef __cplusplus
}
#endif

#endif /* LK_SAFETENSORS_H */
