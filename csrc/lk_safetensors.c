/* lk_safetensors.c: see lk_safetensors.h. */
#include "lk_safetensors.h"

#include "lk_json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[LK_DT_COUNT] = {
    [LK_DT_BF16] = {"BF16", 2}, [LK_DT_F16] = {"F16", 2},         [LK_DT_F32] = {"F32", 4},
    [LK_DT_F64] = {"F64", 8},   [LK_DT_I8] = {"I8", 1},           [LK_DT_U8] = {"U8", 1},
    [LK_DT_I16] = {"I16", 2},   [LK_DT_U16] = {"U16", 2},         [LK_DT_I32] = {"I32", 4},
    [LK_DT_U32] = {"U32", 4},   [LK_DT_I64] = {"I64", 8},         [LK_DT_U64] = {"U64", 8},
    [LK_DT_BOOL] = {"BOOL", 1}, [LK_DT_F8_E4M3] = {"F8_E4M3", 1}, [LK_DT_F8_E5M2] = {"F8_E5M2", 1},
};

const char *lk_dtype_name(int dt) { return dt >= 0 && dt < LK_DT_COUNT ? dtypes[dt].name : "?"; }
size_t lk_dtype_size(int dt) { return dt >= 0 && dt < LK_DT_COUNT ? dtypes[dt].size : 0; }

static char *dupstr(const char *s, size_t n) {
    char *d = (char *)malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = 0; }
    return d;
}

static int cmp_by_offset(const void *a, const void *b) {
    const lk_st_tensor *x = *(const lk_st_tensor *const *)a, *y = *(const lk_st_tensor *const *)b;
    const unsigned char *px = (const unsigned char *)x->data, *py = (const unsigned char *)y->data;
    if (px != py) return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const lk_st_tensor *)a)->name, ((const lk_st_tensor *)b)->name);
}

static lk_status parse_entry(const lk_json *js, const char *label, const char *name, const lk_json_node *v,
                             const unsigned char *data, size_t data_len, lk_st_tensor *t) {
    if (v->type != LK_JSON_OBJECT)
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s': header entry is not an object", label, name);
    const lk_json_node *dt = lk_json_get(js, v, "dtype"), *shape = lk_json_get(js, v, "shape"),
                       *offs = lk_json_get(js, v, "data_offsets");
    if (!dt || dt->type != LK_JSON_STRING)
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s': missing or non-string 'dtype'", label, name);
    t->dtype = -1;
    for (int i = 0; i < LK_DT_COUNT; i++)
        if (strcmp(lk_json_str(js, dt), dtypes[i].name) == 0) t->dtype = i;
    if (t->dtype < 0)
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", label, name, lk_json_str(js, dt));
    if (!shape || shape->type != LK_JSON_ARRAY)
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s': missing or non-array 'shape'", label, name);
    if (shape->n > LK_ST_MAX_DIMS)
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s': %u dimensions (at most %d supported)", label, name, shape->n,
                       LK_ST_MAX_DIMS);
    size_t numel = 1;
    int d = 0;
    for (uint32_t c = shape->first; c; c = js->nodes[c].next, d++) {
        int64_t dim;
        if (!lk_json_int64(js, &js->nodes[c], &dim) || dim < 0)
            return lk_fail(LK_E_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", label, name, d);
        if (lk_mul_ov(numel, (size_t)dim, &numel))
            return lk_fail(LK_E_FORMAT, "%s: tensor '%s': element count overflows", label, name);
        t->shape[d] = dim;
    }
    t->ndim = d;
    t->numel = numel;
    if (!offs || offs->type != LK_JSON_ARRAY || offs->n != 2)
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s': 'data_offsets' must be [begin, end]", label, name);
    int64_t b, e;
    if (!lk_json_int64(js, &js->nodes[offs->first], &b) ||
        !lk_json_int64(js, &js->nodes[js->nodes[offs->first].next], &e) || b < 0 || e < 0)
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s': data_offsets are not non-negative integers", label, name);
    if (b > e) return lk_fail(LK_E_FORMAT, "%s: tensor '%s': data_offsets begin %lld > end %lld", label, name,
                              (long long)b, (long long)e);
    if ((uint64_t)e > data_len)
        return lk_fail(LK_E_FORMAT,
                       "%s: tensor '%s': data_offsets end %lld is past the end of the data (%zu bytes; file "
                       "truncated?)",
                       label, name, (long long)e, data_len);
    size_t want;
    if (lk_mul_ov(numel, dtypes[t->dtype].size, &want) || want != (size_t)(e - b))
        return lk_fail(LK_E_FORMAT, "%s: tensor '%s': %lld data bytes, but shape and dtype %s need %zu", label, name,
                       (long long)(e - b), dtypes[t->dtype].name, want);
    t->data = data + b;
    t->nbytes = (size_t)(e - b);
    return LK_OK;
}

lk_status lk_st_parse(const unsigned char *buf, size_t len, const char *label, lk_st_file *f) {
    memset(f, 0, sizeof *f);
    if (len < 8) return lk_fail(LK_E_FORMAT, "%s: file is %zu bytes, too short for a safetensors header", label, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > LK_ST_MAX_HEADER)
        return lk_fail(LK_E_FORMAT, "%s: header length %llu exceeds the %u-byte limit (not a safetensors file?)",
                       label, (unsigned long long)hlen, LK_ST_MAX_HEADER);
    if (hlen > len - 8)
        return lk_fail(LK_E_FORMAT, "%s: header length %llu is past the end of the file (%zu bytes; truncated?)",
                       label, (unsigned long long)hlen, len);
    lk_json js;
    lk_status st = lk_json_parse((const char *)buf + 8, (size_t)hlen, &js);
    if (st) {
        lk_error_prefix("%s: header: ", label);
        return st;
    }
    const unsigned char *data = buf + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;
    const lk_json_node *root = &js.nodes[0];
    lk_st_tensor **order = NULL;
    if (root->type != LK_JSON_OBJECT) {
        st = lk_fail(LK_E_FORMAT, "%s: header is not a JSON object", label);
        goto done;
    }
    f->tensors = (lk_st_tensor *)calloc(root->n ? root->n : 1, sizeof(lk_st_tensor));
    if (!f->tensors) { st = lk_fail(LK_E_NOMEM, "%s: out of memory", label); goto done; }
    for (uint32_t k = root->first; k; k = js.nodes[js.nodes[k].next].next) {
        const lk_json_node *kn = &js.nodes[k], *vn = &js.nodes[kn->next];
        const char *name = lk_json_str(&js, kn);
        if (strcmp(name, "__metadata__") == 0) {
            if (vn->type != LK_JSON_OBJECT) {
                st = lk_fail(LK_E_FORMAT, "%s: '__metadata__' is not an object", label);
                goto done;
            }
            continue;
        }
        if (strlen(name) != kn->len) {
            st = lk_fail(LK_E_FORMAT, "%s: a tensor name contains a NUL character", label);
            goto done;
        }
        lk_st_tensor *t = &f->tensors[f->n_tensors];
        if ((st = parse_entry(&js, label, name, vn, data, data_len, t))) goto done;
        if (!(t->name = dupstr(name, kn->len))) { st = lk_fail(LK_E_NOMEM, "%s: out of memory", label); goto done; }
        f->n_tensors++;
    }
    /* no overlaps (empty tensors overlap nothing) */
    order = (lk_st_tensor **)malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *order);
    if (!order) { st = lk_fail(LK_E_NOMEM, "%s: out of memory", label); goto done; }
    for (size_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, f->n_tensors, sizeof *order, cmp_by_offset);
    const unsigned char *end = data;
    const lk_st_tensor *last = NULL;
    for (size_t i = 0; i < f->n_tensors; i++) {
        if (!order[i]->nbytes) continue;
        if ((const unsigned char *)order[i]->data < end) {
            st = lk_fail(LK_E_FORMAT, "%s: tensors '%s' and '%s' overlap in the file", label, last->name,
                         order[i]->name);
            goto done;
        }
        end = (const unsigned char *)order[i]->data + order[i]->nbytes;
        last = order[i];
    }
    /* sorted by name for lookup; repeated names are an error */
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_by_name);
    for (size_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
            st = lk_fail(LK_E_FORMAT, "%s: tensor '%s' appears twice in the header", label, f->tensors[i].name);
            goto done;
        }
done:
    free(order);
    lk_json_free(&js);
    if (st) lk_st_close(f);
    return st;
}

lk_status lk_st_open(const char *path, lk_st_file *f) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lk_fail(LK_E_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return lk_fail(LK_E_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return lk_fail(LK_E_IO, "'%s' is not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return lk_fail(LK_E_IO, "cannot map '%s' (%zu bytes): %s", path, len, strerror(e));
        }
    }
    close(fd);
    lk_status st = lk_st_parse((const unsigned char *)map, len, path, f);
    if (st) {
        if (map) munmap(map, len);
        return st;
    }
    f->map = (const unsigned char *)map;
    f->map_len = len;
    if (!(f->path = dupstr(path, strlen(path)))) {
        lk_st_close(f);
        return lk_fail(LK_E_NOMEM, "out of memory");
    }
    return LK_OK;
}

void lk_st_close(lk_st_file *f) {
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map) munmap((void *)f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static const lk_st_tensor *file_find(const lk_st_file *f, const char *name) {
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

lk_status lk_st_set_open(const char *const *paths, int n_paths, lk_st_set *set) {
    memset(set, 0, sizeof *set);
    if (n_paths <= 0) return lk_fail(LK_E_INVALID, "no safetensors files given");
    set->files = (lk_st_file *)calloc((size_t)n_paths, sizeof(lk_st_file));
    if (!set->files) return lk_fail(LK_E_NOMEM, "out of memory");
    lk_status st = LK_OK;
    for (int i = 0; i < n_paths && !st; i++) {
        st = lk_st_open(paths[i], &set->files[i]);
        if (!st) set->n_files = i + 1;
        for (size_t t = 0; !st && t < set->files[i].n_tensors; t++) {
            set->files[i].tensors[t].file_index = i;
            for (int j = 0; j < i && !st; j++)
                if (file_find(&set->files[j], set->files[i].tensors[t].name))
                    st = lk_fail(LK_E_FORMAT, "tensor '%s' is in both '%s' and '%s'", set->files[i].tensors[t].name,
                                 set->files[j].path, set->files[i].path);
        }
    }
    if (st) lk_st_set_close(set);
    return st;
}

void lk_st_set_close(lk_st_set *set) {
    for (int i = 0; i < set->n_files; i++) lk_st_close(&set->files[i]);
    free(set->files);
    memset(set, 0, sizeof *set);
}

const lk_st_tensor *lk_st_set_find(const lk_st_set *set, const char *name) {
    for (int i = 0; i < set->n_files; i++) {
        const lk_st_tensor *t = file_find(&set->files[i], name);
        if (t) return t;
    }
    return NULL;
}

const char *lk_st_set_path(const lk_st_set *set, const lk_st_tensor *t) {
    return t->file_index >= 0 && t->file_index < set->n_files ? set->files[t->file_index].path : "?";
}
