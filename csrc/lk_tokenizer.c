/* lk_tokenizer.c: see lk_tokenizer.h for the semantics. */
#include "lk_tokenizer.h"

#include <pthread.h>
#include <stdlib.h>

#include "lk_json.h"
#include "lk_unicode_table.h"

#define MAX_IDS (1 << 24)
#define LLAMA3_PATTERN                                                                                              \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|" \
    "\\s+(?!\\S)|\\s+"

enum { F_EXISTS = 1, F_ADDED = 2, F_SPECIAL = 4 };
enum { C_OTHER = 0, C_L = 1, C_N = 2, C_S = 3 };

/* ---- growable arrays ---------------------------------------------------- */
static int grow(void **v, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return 0;
        c *= 2;
    }
    void *n = realloc(*v, c * elem);
    if (!n) return 0;
    *v = n;
    *cap = c;
    return 1;
}
static int ids_push(lk_ids *a, int32_t x) {
    if (!grow((void **)&a->v, &a->cap, a->n + 1, sizeof(int32_t))) return 0;
    a->v[a->n++] = x;
    return 1;
}
static int bytes_put(lk_bytes *b, const void *p, size_t n) {
    if (!grow((void **)&b->v, &b->cap, b->n + n, 1)) return 0;
    memcpy(b->v + b->n, p, n);
    b->n += n;
    return 1;
}
void lk_ids_free(lk_ids *a) {
    free(a->v);
    memset(a, 0, sizeof *a);
}
void lk_bytes_free(lk_bytes *b) {
    free(b->v);
    memset(b, 0, sizeof *b);
}

/* ---- hashing -------------------------------------------------------------- */
static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    return h ^ (h >> 32);
}
static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* an open-addressing map from byte strings (owned by the tokenizer, found
 * through `key`) to ids: slot value id + 1, 0 = empty */
typedef struct {
    uint32_t *slot;
    size_t mask;
} idmap;

typedef struct merge_ent {
    uint64_t key; /* (left << 32) | right; UINT64_MAX = empty */
    uint32_t rank;
    int32_t merged;
} merge_ent;

struct lk_tokenizer {
    int32_t n_ids;
    uint8_t *flags;          /* [n_ids] */
    uint32_t *str_off, *str_len, *byt_off, *byt_len;
    char *strs;              /* token strings, NUL-separated */
    size_t strs_n, strs_cap;
    uint8_t *byts;           /* decoded bytes of each token */
    size_t byts_n, byts_cap;
    idmap by_str, by_bytes;  /* string form -> id; decoded bytes -> id (vocab only) */
    merge_ent *merges;
    size_t merges_mask, n_merges;
    int32_t byte_id[256];    /* single-byte tokens, -1 if missing */
    int ignore_merges;
    int32_t bos;
    /* added tokens, sorted by content, for matching in text */
    int32_t *added;
    size_t n_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */
};

/* ---- byte-level alphabet (GPT-2's bytes_to_unicode) ---------------------- */
static void byte_level(uint32_t cp_of[256], int16_t byte_of[512]) {
    int n = 0;
    for (int i = 0; i < 512; i++) byte_of[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        cp_of[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        byte_of[cp_of[b]] = (int16_t)b;
    }
}

/* decode one UTF-8 code point; ill-formed bytes read as one "code point"
 * 0xFFFFFFFF of length 1 (class other) */
static uint32_t utf8_next(const uint8_t *s, size_t n, size_t i, size_t *len) {
    uint8_t c = s[i];
    if (c < 0x80) { *len = 1; return c; }
    size_t need;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) { need = 1; cp = c & 0x1f; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { need = 2; cp = c & 0x0f; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { need = 3; cp = c & 0x07; min = 0x10000; }
    else { *len = 1; return 0xffffffffu; }
    if (n - i <= need) { *len = 1; return 0xffffffffu; }
    for (size_t k = 1; k <= need; k++) {
        if ((s[i + k] & 0xc0) != 0x80) { *len = 1; return 0xffffffffu; }
        cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) { *len = 1; return 0xffffffffu; }
    *len = need + 1;
    return cp;
}

static uint8_t ascii_cls[128];
static pthread_once_t ascii_once = PTHREAD_ONCE_INIT;

static int ucls(uint32_t cp) {
    if (cp < 128) return ascii_cls[cp];
    if (cp > 0x10ffff) return C_OTHER;
    size_t lo = 0, hi = sizeof lk_uni_ranges / sizeof lk_uni_ranges[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < lk_uni_ranges[mid].lo) hi = mid;
        else if (cp > lk_uni_ranges[mid].hi) lo = mid + 1;
        else return lk_uni_ranges[mid].cls;
    }
    return C_OTHER;
}

static void init_ascii(void) {
    for (uint32_t c = 0; c < 128; c++) {
        int k = C_OTHER;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = C_L;
        else if (c >= '0' && c <= '9') k = C_N;
        else if (c == ' ' || (c >= 9 && c <= 13)) k = C_S;
        ascii_cls[c] = (uint8_t)k;
    }
}

/* ---- id maps ------------------------------------------------------------ */
static int idmap_init(idmap *m, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 16) cap *= 2;
    m->slot = (uint32_t *)calloc(cap, sizeof(uint32_t));
    m->mask = cap - 1;
    return m->slot != NULL;
}

static const uint8_t *tok_str(const lk_tokenizer *t, int32_t id, size_t *n) {
    *n = t->str_len[id];
    return (const uint8_t *)t->strs + t->str_off[id];
}
static const uint8_t *tok_byt(const lk_tokenizer *t, int32_t id, size_t *n) {
    *n = t->byt_len[id];
    return t->byts + t->byt_off[id];
}

typedef const uint8_t *(*keyfn)(const lk_tokenizer *, int32_t, size_t *);

static int32_t idmap_get(const lk_tokenizer *t, const idmap *m, keyfn key, const uint8_t *p, size_t n) {
    for (size_t i = hash_bytes(p, n) & m->mask;; i = (i + 1) & m->mask) {
        uint32_t s = m->slot[i];
        if (!s) return -1;
        size_t kn;
        const uint8_t *k = key(t, (int32_t)(s - 1), &kn);
        if (kn == n && memcmp(k, p, n) == 0) return (int32_t)(s - 1);
    }
}

/* inserts id unless its key is present (first insert wins) */
static void idmap_put(const lk_tokenizer *t, idmap *m, keyfn key, int32_t id) {
    size_t n;
    const uint8_t *p = key(t, id, &n);
    for (size_t i = hash_bytes(p, n) & m->mask;; i = (i + 1) & m->mask) {
        uint32_t s = m->slot[i];
        if (!s) {
            m->slot[i] = (uint32_t)id + 1;
            return;
        }
        size_t kn;
        const uint8_t *k = key(t, (int32_t)(s - 1), &kn);
        if (kn == n && memcmp(k, p, n) == 0) return;
    }
}

static merge_ent *merge_find(const lk_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t i = hash_u64(key) & t->merges_mask;; i = (i + 1) & t->merges_mask) {
        merge_ent *e = &t->merges[i];
        if (e->key == key) return e;
        if (e->key == UINT64_MAX) return NULL;
    }
}

static void merge_put(lk_tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t i = hash_u64(key) & t->merges_mask;; i = (i + 1) & t->merges_mask) {
        merge_ent *e = &t->merges[i];
        if (e->key == UINT64_MAX || e->key == key) { /* a repeated merge takes its later rank, as HF's map does */
            e->key = key;
            e->rank = rank;
            e->merged = merged;
            return;
        }
    }
}

/* ---- loading -------------------------------------------------------------- */
static lk_status set_token(lk_tokenizer *t, int32_t id, const char *s, size_t n, const uint32_t cp_of[256],
                           const int16_t byte_of[512], uint8_t flags) {
    (void)cp_of;
    if (n > (1u << 20)) return lk_fail(LK_E_FORMAT, "tokenizer.json: token %d is longer than 1 MiB", id);
    if (!grow((void **)&t->strs, &t->strs_cap, t->strs_n + n + 1, 1) ||
        !grow((void **)&t->byts, &t->byts_cap, t->byts_n + n, 1))
        return lk_fail(LK_E_NOMEM, "out of memory loading the tokenizer");
    t->str_off[id] = (uint32_t)t->strs_n;
    t->str_len[id] = (uint32_t)n;
    memcpy(t->strs + t->strs_n, s, n);
    t->strs[t->strs_n + n] = 0;
    t->strs_n += n + 1;
    /* decoded bytes: through the byte-level alphabet if every character is in it, else the raw text */
    size_t start = t->byts_n, i = 0;
    int mapped = 1;
    while (i < n) {
        size_t l;
        uint32_t cp = utf8_next((const uint8_t *)s, n, i, &l);
        if (cp >= 512 || byte_of[cp] < 0) { mapped = 0; break; }
        t->byts[t->byts_n++] = (uint8_t)byte_of[cp];
        i += l;
    }
    if (!mapped) {
        t->byts_n = start;
        memcpy(t->byts + start, s, n);
        t->byts_n += n;
    }
    t->byt_off[id] = (uint32_t)start;
    t->byt_len[id] = (uint32_t)(t->byts_n - start);
    t->flags[id] = (uint8_t)(flags | F_EXISTS | (mapped ? 0 : 8));
    if (t->strs_n > UINT32_MAX || t->byts_n > UINT32_MAX)
        return lk_fail(LK_E_FORMAT, "tokenizer.json: vocabulary too large");
    return LK_OK;
}

static int jstr_eq(const lk_json *j, const lk_json_node *n, const char *s) {
    return n && n->type == LK_JSON_STRING && strcmp(lk_json_str(j, n), s) == 0 && n->len == strlen(s);
}

static lk_status check_pipeline(const lk_json *j, const lk_json_node *root) {
    const lk_json_node *norm = lk_json_get(j, root, "normalizer");
    if (norm && norm->type != LK_JSON_NULL)
        return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: a normalizer is set; only Llama 3 style tokenizers "
                                         "(no normalizer, byte-level BPE) are supported");
    const lk_json_node *pre = lk_json_get(j, root, "pre_tokenizer");
    const lk_json_node *split = NULL, *bl = NULL;
    if (pre && jstr_eq(j, lk_json_get(j, pre, "type"), "Sequence")) {
        const lk_json_node *list = lk_json_get(j, pre, "pretokenizers");
        if (list && list->type == LK_JSON_ARRAY && list->n == 2) {
            split = &j->nodes[list->first];
            bl = &j->nodes[split->next];
        }
    }
    if (!split || !jstr_eq(j, lk_json_get(j, split, "type"), "Split") || !bl ||
        !jstr_eq(j, lk_json_get(j, bl, "type"), "ByteLevel"))
        return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: pre_tokenizer is not the Llama 3 one (Sequence of Split "
                                         "regex + ByteLevel); this tokenizer is not supported");
    const lk_json_node *pat = lk_json_get(j, lk_json_get(j, split, "pattern"), "Regex");
    if (!jstr_eq(j, pat, LLAMA3_PATTERN))
        return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: the pre-tokenizer regex is not Llama 3's; not supported");
    if (!jstr_eq(j, lk_json_get(j, split, "behavior"), "Isolated"))
        return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: Split behavior must be Isolated");
    const lk_json_node *inv = lk_json_get(j, split, "invert");
    if (inv && inv->type == LK_JSON_TRUE) return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: Split invert is set");
    const lk_json_node *aps = lk_json_get(j, bl, "add_prefix_space"), *ur = lk_json_get(j, bl, "use_regex");
    if ((aps && aps->type == LK_JSON_TRUE) || (ur && ur->type == LK_JSON_TRUE))
        return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: ByteLevel add_prefix_space/use_regex must be false");
    const lk_json_node *dec = lk_json_get(j, root, "decoder");
    if (!dec || !jstr_eq(j, lk_json_get(j, dec, "type"), "ByteLevel"))
        return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: decoder must be ByteLevel");
    return LK_OK;
}

/* BOS: the first SpecialToken of the post-processor's "single" template */
static int32_t find_bos(const lk_tokenizer *t, const lk_json *j, const lk_json_node *pp) {
    if (!pp || pp->type != LK_JSON_OBJECT) return -1;
    if (jstr_eq(j, lk_json_get(j, pp, "type"), "Sequence")) {
        const lk_json_node *list = lk_json_get(j, pp, "processors");
        if (!list || list->type != LK_JSON_ARRAY) return -1;
        for (uint32_t c = list->first; c; c = j->nodes[c].next) {
            int32_t b = find_bos(t, j, &j->nodes[c]);
            if (b >= 0) return b;
        }
        return -1;
    }
    if (!jstr_eq(j, lk_json_get(j, pp, "type"), "TemplateProcessing")) return -1;
    const lk_json_node *single = lk_json_get(j, pp, "single");
    if (!single || single->type != LK_JSON_ARRAY || !single->first) return -1;
    const lk_json_node *sp = lk_json_get(j, &j->nodes[single->first], "SpecialToken");
    const lk_json_node *name = lk_json_get(j, sp, "id");
    if (!name || name->type != LK_JSON_STRING) return -1;
    return lk_tok_lookup(t, lk_json_str(j, name), name->len);
}

typedef struct {
    const uint8_t *p;
    size_t n;
    int32_t id;
} added_key;

static int cmp_added(const void *a, const void *b) {
    const added_key *x = (const added_key *)a, *y = (const added_key *)b;
    int c = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n < y->n ? -1 : x->n > y->n);
}

/* sorts added-token ids by content, for find_added's binary search */
static lk_status sort_added(lk_tokenizer *t) {
    added_key *k = (added_key *)malloc((t->n_added ? t->n_added : 1) * sizeof *k);
    if (!k) return lk_fail(LK_E_NOMEM, "out of memory");
    for (size_t i = 0; i < t->n_added; i++) {
        k[i].id = t->added[i];
        k[i].p = tok_str(t, t->added[i], &k[i].n);
    }
    qsort(k, t->n_added, sizeof *k, cmp_added);
    for (size_t i = 0; i < t->n_added; i++) t->added[i] = k[i].id;
    free(k);
    return LK_OK;
}

static lk_status load_json(lk_tokenizer *t, const lk_json *j) {
    const lk_json_node *root = &j->nodes[0];
    if (root->type != LK_JSON_OBJECT) return lk_fail(LK_E_FORMAT, "tokenizer.json: not a JSON object");
    const lk_json_node *model = lk_json_get(j, root, "model");
    if (!model || model->type != LK_JSON_OBJECT) return lk_fail(LK_E_FORMAT, "tokenizer.json: no 'model' object");
    if (!jstr_eq(j, lk_json_get(j, model, "type"), "BPE"))
        return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: model type is not BPE; only byte-level BPE is supported");
    const lk_json_node *bf = lk_json_get(j, model, "byte_fallback");
    if (bf && bf->type == LK_JSON_TRUE)
        return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: byte_fallback BPE (SentencePiece style) is not supported");
    for (const char *k = "continuing_subword_prefix"; k; k = k[0] == 'c' ? "end_of_word_suffix" : NULL) {
        const lk_json_node *v = lk_json_get(j, model, k);
        if (v && v->type != LK_JSON_NULL) return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: model.%s is not supported", k);
    }
    lk_status st = check_pipeline(j, root);
    if (st) return st;
    const lk_json_node *im = lk_json_get(j, model, "ignore_merges");
    t->ignore_merges = im && im->type == LK_JSON_TRUE;
    const lk_json_node *vocab = lk_json_get(j, model, "vocab"), *merges = lk_json_get(j, model, "merges"),
                       *added = lk_json_get(j, root, "added_tokens");
    if (!vocab || vocab->type != LK_JSON_OBJECT) return lk_fail(LK_E_FORMAT, "tokenizer.json: model.vocab is not an object");
    if (!merges || merges->type != LK_JSON_ARRAY) return lk_fail(LK_E_FORMAT, "tokenizer.json: model.merges is not an array");
    if (added && added->type != LK_JSON_ARRAY && added->type != LK_JSON_NULL)
        return lk_fail(LK_E_FORMAT, "tokenizer.json: added_tokens is not an array");
    /* ids */
    int64_t max_id = -1;
    for (uint32_t k = vocab->first; k; k = j->nodes[j->nodes[k].next].next) {
        int64_t id;
        if (!lk_json_int64(j, &j->nodes[j->nodes[k].next], &id) || id < 0 || id >= MAX_IDS)
            return lk_fail(LK_E_FORMAT, "tokenizer.json: vocab entry '%.60s' has an id that is not in [0, %d)",
                           lk_json_str(j, &j->nodes[k]), MAX_IDS);
        if (id > max_id) max_id = id;
    }
    if (added && added->type == LK_JSON_ARRAY)
        for (uint32_t c = added->first; c; c = j->nodes[c].next) {
            const lk_json_node *a = &j->nodes[c];
            int64_t id;
            const lk_json_node *content = lk_json_get(j, a, "content");
            if (a->type != LK_JSON_OBJECT || !lk_json_int64(j, lk_json_get(j, a, "id"), &id) || id < 0 ||
                id >= MAX_IDS || !content || content->type != LK_JSON_STRING || content->len == 0)
                return lk_fail(LK_E_FORMAT, "tokenizer.json: an added token lacks a valid id or non-empty content");
            static const char *const unsupported[] = {"lstrip", "rstrip", "single_word"};
            for (int f = 0; f < 3; f++) {
                const char *fl = unsupported[f];
                const lk_json_node *v = lk_json_get(j, a, fl);
                if (v && v->type == LK_JSON_TRUE)
                    return lk_fail(LK_E_UNSUPPORTED, "tokenizer.json: added token '%.60s' uses %s, which is not supported",
                                   lk_json_str(j, content), fl);
            }
            if (id > max_id) max_id = id;
        }
    if (max_id < 255) return lk_fail(LK_E_FORMAT, "tokenizer.json: vocabulary has fewer than 256 tokens");
    t->n_ids = (int32_t)(max_id + 1);
    size_t n = (size_t)t->n_ids;
    t->flags = (uint8_t *)calloc(n, 1);
    t->str_off = (uint32_t *)calloc(n, 4);
    t->str_len = (uint32_t *)calloc(n, 4);
    t->byt_off = (uint32_t *)calloc(n, 4);
    t->byt_len = (uint32_t *)calloc(n, 4);
    if (!t->flags || !t->str_off || !t->str_len || !t->byt_off || !t->byt_len || !idmap_init(&t->by_str, n) ||
        !idmap_init(&t->by_bytes, n))
        return lk_fail(LK_E_NOMEM, "out of memory loading the tokenizer");
    uint32_t cp_of[256];
    int16_t byte_of[512];
    byte_level(cp_of, byte_of);
    /* added tokens first: they win lookups by string */
    if (added && added->type == LK_JSON_ARRAY) {
        t->added = (int32_t *)malloc((added->n ? added->n : 1) * sizeof(int32_t));
        if (!t->added) return lk_fail(LK_E_NOMEM, "out of memory loading the tokenizer");
        for (uint32_t c = added->first; c; c = j->nodes[c].next) {
            const lk_json_node *a = &j->nodes[c], *content = lk_json_get(j, a, "content"),
                               *sp = lk_json_get(j, a, "special");
            int64_t id;
            lk_json_int64(j, lk_json_get(j, a, "id"), &id);
            if (t->flags[id] & F_ADDED) continue; /* listed twice: first wins */
            if ((st = set_token(t, (int32_t)id, lk_json_str(j, content), content->len, cp_of, byte_of,
                                (uint8_t)(F_ADDED | (sp && sp->type == LK_JSON_TRUE ? F_SPECIAL : 0)))))
                return st;
            t->added[t->n_added++] = (int32_t)id;
        }
        for (size_t i = 0; i < t->n_added; i++) idmap_put(t, &t->by_str, tok_str, t->added[i]);
    }
    for (uint32_t k = vocab->first; k; k = j->nodes[j->nodes[k].next].next) {
        int64_t id;
        lk_json_int64(j, &j->nodes[j->nodes[k].next], &id);
        if (t->flags[id] & F_ADDED) continue;
        if ((st = set_token(t, (int32_t)id, lk_json_str(j, &j->nodes[k]), j->nodes[k].len, cp_of, byte_of, 0))) return st;
    }
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!(t->flags[id] & F_EXISTS) || (t->flags[id] & F_ADDED)) continue;
        idmap_put(t, &t->by_str, tok_str, id);
        if (!(t->flags[id] & 8)) idmap_put(t, &t->by_bytes, tok_byt, id);
    }
    /* single bytes */
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t l = 0;
        uint32_t cp = cp_of[b];
        if (cp < 0x80) s[l++] = (char)cp;
        else { s[l++] = (char)(0xc0 | (cp >> 6)); s[l++] = (char)(0x80 | (cp & 0x3f)); }
        t->byte_id[b] = idmap_get(t, &t->by_str, tok_str, (const uint8_t *)s, l);
    }
    /* merges: "a b" strings or ["a", "b"] pairs */
    size_t cap = 16;
    while (cap < 2 * (size_t)merges->n + 16) cap *= 2;
    t->merges = (merge_ent *)malloc(cap * sizeof(merge_ent));
    if (!t->merges) return lk_fail(LK_E_NOMEM, "out of memory loading the tokenizer");
    for (size_t i = 0; i < cap; i++) t->merges[i].key = UINT64_MAX;
    t->merges_mask = cap - 1;
    char *buf = NULL;
    size_t bufcap = 0;
    uint32_t rank = 0;
    for (uint32_t c = merges->first; c; c = j->nodes[c].next, rank++) {
        const lk_json_node *m = &j->nodes[c];
        const char *a, *b;
        size_t na, nb;
        if (m->type == LK_JSON_STRING) {
            const char *s = lk_json_str(j, m);
            const char *sp = memchr(s, ' ', m->len);
            if (!sp) { free(buf); return lk_fail(LK_E_FORMAT, "tokenizer.json: merge %u ('%.60s') has no space", rank, s); }
            a = s; na = (size_t)(sp - s); b = sp + 1; nb = m->len - na - 1;
        } else if (m->type == LK_JSON_ARRAY && m->n == 2 && j->nodes[m->first].type == LK_JSON_STRING &&
                   j->nodes[j->nodes[m->first].next].type == LK_JSON_STRING) {
            const lk_json_node *x = &j->nodes[m->first], *y = &j->nodes[x->next];
            a = lk_json_str(j, x); na = x->len; b = lk_json_str(j, y); nb = y->len;
        } else {
            free(buf);
            return lk_fail(LK_E_FORMAT, "tokenizer.json: merge %u is neither \"a b\" nor [\"a\", \"b\"]", rank);
        }
        int32_t ia = idmap_get(t, &t->by_str, tok_str, (const uint8_t *)a, na);
        int32_t ib = idmap_get(t, &t->by_str, tok_str, (const uint8_t *)b, nb);
        if (!grow((void **)&buf, &bufcap, na + nb + 1, 1)) { free(buf); return lk_fail(LK_E_NOMEM, "out of memory"); }
        memcpy(buf, a, na);
        memcpy(buf + na, b, nb);
        int32_t im2 = idmap_get(t, &t->by_str, tok_str, (const uint8_t *)buf, na + nb);
        if (ia < 0 || ib < 0 || im2 < 0) {
            free(buf);
            return lk_fail(LK_E_FORMAT, "tokenizer.json: merge %u ('%.*s' + '%.*s') uses a token missing from the vocabulary",
                           rank, (int)(na > 40 ? 40 : na), a, (int)(nb > 40 ? 40 : nb), b);
        }
        merge_put(t, ia, ib, rank, im2);
        t->n_merges++;
    }
    free(buf);
    /* added tokens sorted for matching */
    if ((st = sort_added(t))) return st;
    for (size_t i = 0; i < t->n_added; i++) {
        size_t l;
        t->added_first[tok_str(t, t->added[i], &l)[0]] = 1;
    }
    t->bos = find_bos(t, j, lk_json_get(j, root, "post_processor"));
    return LK_OK;
}

lk_status lk_tokenizer_load(const char *json, size_t len, lk_tokenizer **out) {
    *out = NULL;
    pthread_once(&ascii_once, init_ascii);
    lk_json j;
    lk_status st = lk_json_parse(json, len, &j);
    if (st) {
        lk_error_prefix("tokenizer.json: ");
        return st;
    }
    lk_tokenizer *t = (lk_tokenizer *)calloc(1, sizeof *t);
    if (!t) {
        lk_json_free(&j);
        return lk_fail(LK_E_NOMEM, "out of memory");
    }
    st = load_json(t, &j);
    lk_json_free(&j);
    if (st) {
        lk_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LK_OK;
}

void lk_tokenizer_free(lk_tokenizer *t) {
    if (!t) return;
    free(t->flags);
    free(t->str_off);
    free(t->str_len);
    free(t->byt_off);
    free(t->byt_len);
    free(t->strs);
    free(t->byts);
    free(t->by_str.slot);
    free(t->by_bytes.slot);
    free(t->merges);
    free(t->added);
    free(t);
}

int32_t lk_tok_n_ids(const lk_tokenizer *t) { return t->n_ids; }
int32_t lk_tok_bos(const lk_tokenizer *t) { return t->bos; }
size_t lk_tok_n_merges(const lk_tokenizer *t) { return t->n_merges; }

const char *lk_tok_string(const lk_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || !(t->flags[id] & F_EXISTS)) return NULL;
    return (const char *)tok_str(t, id, len);
}
int32_t lk_tok_lookup(const lk_tokenizer *t, const char *s, size_t len) {
    return idmap_get(t, &t->by_str, tok_str, (const uint8_t *)s, len);
}
int lk_tok_is_special(const lk_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->flags[id] & F_SPECIAL);
}
int lk_tok_is_added(const lk_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_ids && (t->flags[id] & F_ADDED); }

/* ---- pre-tokenizer ---------------------------------------------------------- */

static size_t run_of(const uint8_t *s, size_t n, size_t i, int cls, size_t max_chars) {
    size_t k = 0;
    while (i < n && k < max_chars) {
        size_t l;
        uint32_t cp = utf8_next(s, n, i, &l);
        if (ucls(cp) != cls) break;
        i += l;
        k++;
    }
    return i;
}

static int lower_ascii(uint8_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* end (byte offset) of the regex match starting at i */
static size_t match_piece(const uint8_t *s, size_t n, size_t i) {
    size_t l0;
    uint32_t c0 = utf8_next(s, n, i, &l0);
    int k0 = ucls(c0);
    /* 1. (?i:'s|'t|'re|'ve|'m|'ll|'d) */
    if (c0 == '\'' && i + 1 < n) {
        int a = lower_ascii(s[i + 1]);
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            int b = lower_ascii(s[i + 2]);
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    /* 2. [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (k0 == C_L) return run_of(s, n, i, C_L, SIZE_MAX);
    if (c0 != '\r' && c0 != '\n' && k0 != C_N && i + l0 < n) {
        size_t l1;
        uint32_t c1 = utf8_next(s, n, i + l0, &l1);
        if (ucls(c1) == C_L) return run_of(s, n, i + l0, C_L, SIZE_MAX);
    }
    /* 3. \p{N}{1,3} */
    if (k0 == C_N) return run_of(s, n, i, C_N, 3);
    /* 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    {
        size_t j = i;
        if (c0 == ' ' && i + 1 < n) {
            size_t l1;
            if (ucls(utf8_next(s, n, i + 1, &l1)) == C_OTHER) j = i + 1;
        }
        size_t lj;
        if (ucls(utf8_next(s, n, j, &lj)) == C_OTHER) {
            size_t e = run_of(s, n, j, C_OTHER, SIZE_MAX);
            while (e < n && (s[e] == '\r' || s[e] == '\n')) e++;
            return e;
        }
    }
    /* here c0 is whitespace */
    size_t end = run_of(s, n, i, C_S, SIZE_MAX), last_nl = 0, last_start = i;
    int have_nl = 0;
    for (size_t p = i; p < end;) {
        size_t l;
        uint32_t cp = utf8_next(s, n, p, &l);
        if (cp == '\r' || cp == '\n') {
            have_nl = 1;
            last_nl = p + l;
        }
        last_start = p;
        p += l;
    }
    /* 5. \s*[\r\n]+ : through the last CR/LF of the run */
    if (have_nl) return last_nl;
    /* 6. \s+(?!\S) : the run, minus its last char when a non-space follows */
    if (end == n) return end;
    if (last_start > i) return last_start;
    /* 7. \s+ */
    return end;
}

/* ---- BPE ---------------------------------------------------------------------- */

typedef struct {
    int32_t id, prev, next;
} sym;
typedef struct {
    uint32_t rank;
    int32_t pos, merged;
} cand;

typedef struct {
    sym *syms;
    size_t syms_cap;
    cand *heap;
    size_t heap_n, heap_cap;
    /* piece cache: direct-mapped */
    struct cache_ent {
        const uint8_t *p;
        uint32_t len, off, n;
    } *cache;
    size_t cache_mask;
    lk_ids cache_vals;
    size_t pieces;
} scratch;

static int cand_less(const cand *a, const cand *b) { return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos); }

static int heap_push(scratch *s, cand c) {
    if (!grow((void **)&s->heap, &s->heap_cap, s->heap_n + 1, sizeof(cand))) return 0;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = c;
    return 1;
}

static cand heap_pop(scratch *s) {
    cand top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < s->heap_n && cand_less(&s->heap[l], best)) { m = l; best = &s->heap[l]; }
        if (r < s->heap_n && cand_less(&s->heap[r], best)) { m = r; best = &s->heap[r]; }
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (s->heap_n) s->heap[i] = last;
    return top;
}

static int push_pair(const lk_tokenizer *t, scratch *s, int32_t pos) {
    int32_t nx = s->syms[pos].next;
    if (nx < 0) return 1;
    merge_ent *m = merge_find(t, s->syms[pos].id, s->syms[nx].id);
    if (!m) return 1;
    cand c = {m->rank, pos, m->merged};
    return heap_push(s, c);
}

static lk_status bpe(const lk_tokenizer *t, scratch *s, const uint8_t *p, size_t n, lk_ids *out) {
    if (t->ignore_merges || n == 1) {
        int32_t id = idmap_get(t, &t->by_bytes, tok_byt, p, n);
        if (id >= 0) return ids_push(out, id) ? LK_OK : lk_fail(LK_E_NOMEM, "out of memory");
    }
    /* cache (pieces up to 128 bytes) */
    struct cache_ent *ce = NULL;
    if (s->cache && n <= 128) {
        ce = &s->cache[hash_bytes(p, n) & s->cache_mask];
        if (ce->p && ce->len == n && memcmp(ce->p, p, n) == 0) {
            for (uint32_t i = 0; i < ce->n; i++)
                if (!ids_push(out, s->cache_vals.v[ce->off + i])) return lk_fail(LK_E_NOMEM, "out of memory");
            return LK_OK;
        }
    }
    if (n > INT32_MAX / 2) return lk_fail(LK_E_INVALID, "text piece too long");
    if (!grow((void **)&s->syms, &s->syms_cap, n, sizeof(sym))) return lk_fail(LK_E_NOMEM, "out of memory");
    /* symbols: one per byte; bytes without a token are dropped (HF without unk/byte_fallback) */
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[p[i]];
        if (id < 0) continue;
        s->syms[m].id = id;
        s->syms[m].prev = m - 1;
        s->syms[m].next = -1;
        if (m > 0) s->syms[m - 1].next = m;
        m++;
    }
    s->heap_n = 0;
    for (int32_t i = 0; i + 1 < m; i++)
        if (!push_pair(t, s, i)) return lk_fail(LK_E_NOMEM, "out of memory");
    while (s->heap_n) {
        cand c = heap_pop(s);
        sym *a = &s->syms[c.pos];
        if (a->id < 0 || a->next < 0) continue;
        sym *b = &s->syms[a->next];
        merge_ent *me = merge_find(t, a->id, b->id);
        if (!me || me->merged != c.merged) continue; /* stale */
        a->id = c.merged;
        b->id = -1;
        a->next = b->next;
        if (b->next >= 0) s->syms[b->next].prev = c.pos;
        if ((a->prev >= 0 && !push_pair(t, s, a->prev)) || !push_pair(t, s, c.pos))
            return lk_fail(LK_E_NOMEM, "out of memory");
    }
    size_t start = out->n;
    for (int32_t i = m ? 0 : -1; i >= 0; i = s->syms[i].next)
        if (!ids_push(out, s->syms[i].id)) return lk_fail(LK_E_NOMEM, "out of memory");
    if (ce) {
        size_t cnt = out->n - start;
        ce->p = p;
        ce->len = (uint32_t)n;
        ce->off = (uint32_t)s->cache_vals.n;
        ce->n = (uint32_t)cnt;
        for (size_t i = 0; i < cnt; i++)
            if (!ids_push(&s->cache_vals, out->v[start + i])) return lk_fail(LK_E_NOMEM, "out of memory");
    }
    return LK_OK;
}

static lk_status encode_segment(const lk_tokenizer *t, scratch *s, const uint8_t *p, size_t n, lk_ids *out) {
    size_t i = 0;
    while (i < n) {
        size_t e = match_piece(p, n, i);
        if (e <= i) e = i + 1; /* cannot happen; never loop forever */
        if (++s->pieces == 64 && !s->cache) {
            size_t cap = 4096;
            s->cache = (struct cache_ent *)calloc(cap, sizeof *s->cache);
            s->cache_mask = cap - 1;
        }
        lk_status st = bpe(t, s, p + i, e - i, out);
        if (st) return st;
        i = e;
    }
    return LK_OK;
}

/* leftmost-longest added token at or after `from`; returns its start or n */
static size_t find_added(const lk_tokenizer *t, const uint8_t *s, size_t n, size_t from, int32_t *id, size_t *len) {
    for (size_t i = from; i < n; i++) {
        if (!t->added_first[s[i]]) continue;
        /* binary search for the first added token >= s[i] (by its first byte), then scan that block */
        size_t lo = 0, hi = t->n_added;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2, l;
            if (tok_str(t, t->added[mid], &l)[0] < s[i]) lo = mid + 1;
            else hi = mid;
        }
        size_t best = 0;
        int32_t best_id = -1;
        for (size_t k = lo; k < t->n_added; k++) {
            size_t l;
            const uint8_t *c = tok_str(t, t->added[k], &l);
            if (c[0] != s[i]) break;
            if (l <= n - i && l > best && memcmp(c, s + i, l) == 0) {
                best = l;
                best_id = t->added[k];
            }
        }
        if (best_id >= 0) {
            *id = best_id;
            *len = best;
            return i;
        }
    }
    return n;
}

lk_status lk_tok_encode(const lk_tokenizer *t, const char *text, size_t len, int parse_special, int add_bos,
                        lk_ids *out) {
    scratch s;
    memset(&s, 0, sizeof s);
    lk_status st = LK_OK;
    const uint8_t *p = (const uint8_t *)text;
    if (add_bos && t->bos >= 0 && !ids_push(out, t->bos)) return lk_fail(LK_E_NOMEM, "out of memory");
    size_t i = 0;
    while (i < len && !st) {
        int32_t id = -1;
        size_t l = 0, at = parse_special && t->n_added ? find_added(t, p, len, i, &id, &l) : len;
        st = encode_segment(t, &s, p + i, at - i, out);
        if (!st && at < len) {
            if (!ids_push(out, id)) st = lk_fail(LK_E_NOMEM, "out of memory");
            i = at + l;
        } else {
            i = len;
        }
    }
    free(s.syms);
    free(s.heap);
    free(s.cache);
    lk_ids_free(&s.cache_vals);
    return st;
}

lk_status lk_tok_pretokenize(const char *text, size_t len, lk_ids *ends) {
    pthread_once(&ascii_once, init_ascii);
    const uint8_t *p = (const uint8_t *)text;
    size_t i = 0;
    while (i < len) {
        size_t e = match_piece(p, len, i);
        if (e <= i) e = i + 1;
        if (e > INT32_MAX) return lk_fail(LK_E_INVALID, "text too long");
        if (!ids_push(ends, (int32_t)e)) return lk_fail(LK_E_NOMEM, "out of memory");
        i = e;
    }
    return LK_OK;
}

lk_status lk_tok_decode_bytes(const lk_tokenizer *t, const int32_t *ids, size_t n, int skip_special, lk_bytes *out) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->flags[id] & F_EXISTS))
            return lk_fail(LK_E_INVALID, "token id %d (at index %zu) is not in the vocabulary [0, %d)", id, i, t->n_ids);
        if (skip_special && (t->flags[id] & F_SPECIAL)) continue;
        size_t l;
        const uint8_t *b = tok_byt(t, id, &l);
        if (!bytes_put(out, b, l)) return lk_fail(LK_E_NOMEM, "out of memory");
    }
    return LK_OK;
}

/* length of the maximal well-formed prefix of a UTF-8 sequence at s[0..n)
 * (Unicode Table 3-7); *complete = 1 if it is a whole code point */
static size_t utf8_prefix(const uint8_t *s, size_t n, int *complete) {
    uint8_t c = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf;
    *complete = 0;
    if (c < 0x80) { *complete = 1; return 1; }
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) { need = 2; if (c == 0xe0) lo = 0xa0; if (c == 0xed) hi = 0x9f; }
    else if (c >= 0xf0 && c <= 0xf4) { need = 3; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
    else return 0; /* never the start of a well-formed sequence */
    size_t k = 1;
    for (; k <= need && k < n; k++) {
        uint8_t b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) break;
    }
    if (k == need + 1) *complete = 1;
    return k;
}

lk_status lk_utf8_repair(const uint8_t *in, size_t n, lk_bytes *out) {
    static const uint8_t fffd[3] = {0xef, 0xbf, 0xbd};
    if (!grow((void **)&out->v, &out->cap, out->n + n, 1)) return lk_fail(LK_E_NOMEM, "out of memory");
    size_t i = 0;
    while (i < n) {
        int complete;
        size_t k = utf8_prefix(in + i, n - i, &complete);
        if (complete) {
            if (!bytes_put(out, in + i, k)) return lk_fail(LK_E_NOMEM, "out of memory");
            i += k;
        } else {
            if (!bytes_put(out, fffd, 3)) return lk_fail(LK_E_NOMEM, "out of memory");
            i += k ? k : 1;
        }
    }
    return LK_OK;
}
