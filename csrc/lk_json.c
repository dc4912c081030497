/* lk_json.c: see lk_json.h. Recursive descent with a depth cap; every read is
 * bounds-checked against the end of the input (the input need not be
 * NUL-terminated). */
#include "lk_json.h"

#include <errno.h>
#include <stdlib.h>

typedef struct {
    const unsigned char *s;
    size_t len, pos;
    lk_json *j;
} parser;

static lk_status perr(parser *p, const char *what) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p->pos && i < p->len; i++) {
        if (p->s[i] == '\n') { line++; col = 1; } else col++;
    }
    return lk_fail(LK_E_FORMAT, "JSON syntax error at byte %zu (line %zu, column %zu): %s", p->pos, line, col, what);
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->pos++;
        else break;
    }
}

static lk_status new_node(parser *p, uint32_t type, uint32_t *idx) {
    lk_json *j = p->j;
    if (j->n_nodes == j->cap_nodes) {
        size_t cap = j->cap_nodes ? j->cap_nodes * 2 : 256, bytes;
        if (cap > UINT32_MAX || lk_mul_ov(cap, sizeof(lk_json_node), &bytes))
            return lk_fail(LK_E_FORMAT, "JSON document has too many values");
        lk_json_node *n = (lk_json_node *)realloc(j->nodes, bytes);
        if (!n) return lk_fail(LK_E_NOMEM, "out of memory parsing JSON (%zu nodes)", cap);
        j->nodes = n;
        j->cap_nodes = cap;
    }
    *idx = (uint32_t)j->n_nodes++;
    memset(&j->nodes[*idx], 0, sizeof(lk_json_node));
    j->nodes[*idx].type = type;
    return LK_OK;
}

static int hex4(const unsigned char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *d, uint32_t cp) {
    if (cp < 0x80) { d[0] = (char)cp; return 1; }
    if (cp < 0x800) { d[0] = (char)(0xc0 | (cp >> 6)); d[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        d[0] = (char)(0xe0 | (cp >> 12)); d[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); d[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (char)(0xf0 | (cp >> 18)); d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); d[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* at the opening quote; decodes into the arena */
static lk_status parse_string(parser *p, uint32_t *idx) {
    lk_status st = new_node(p, LK_JSON_STRING, idx);
    if (st) return st;
    lk_json *j = p->j;
    p->pos++; /* opening quote */
    size_t start = j->arena_len;
    char *d = j->arena + start;
    size_t w = 0;
    for (;;) {
        if (p->pos >= p->len) return perr(p, "unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) return perr(p, "control character inside a string");
        if (c != '\\') { d[w++] = (char)c; p->pos++; continue; }
        if (p->pos + 1 >= p->len) return perr(p, "unterminated escape");
        unsigned char e = p->s[p->pos + 1];
        p->pos += 2;
        switch (e) {
        case '"': d[w++] = '"'; break;
        case '\\': d[w++] = '\\'; break;
        case '/': d[w++] = '/'; break;
        case 'b': d[w++] = '\b'; break;
        case 'f': d[w++] = '\f'; break;
        case 'n': d[w++] = '\n'; break;
        case 'r': d[w++] = '\r'; break;
        case 't': d[w++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (p->len - p->pos < 4 || !hex4(p->s + p->pos, &cp)) return perr(p, "bad \\u escape");
            p->pos += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff) return perr(p, "lone low surrogate in \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (p->len - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u' ||
                    !hex4(p->s + p->pos + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return perr(p, "lone high surrogate in \\u escape");
                p->pos += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            w += put_utf8(d + w, cp);
            break;
        }
        default: p->pos--; return perr(p, "invalid escape character");
        }
    }
    d[w] = 0;
    j->arena_len = start + w + 1;
    j->nodes[*idx].off = start;
    j->nodes[*idx].len = w;
    return LK_OK;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static lk_status parse_number(parser *p, uint32_t *idx) {
    size_t start = p->pos;
    const unsigned char *s = p->s;
    if (p->pos < p->len && s[p->pos] == '-') p->pos++;
    if (p->pos >= p->len || !is_digit(s[p->pos])) return perr(p, "invalid number");
    if (s[p->pos] == '0') p->pos++;
    else while (p->pos < p->len && is_digit(s[p->pos])) p->pos++;
    if (p->pos < p->len && s[p->pos] == '.') {
        p->pos++;
        if (p->pos >= p->len || !is_digit(s[p->pos])) return perr(p, "invalid number: digit expected after '.'");
        while (p->pos < p->len && is_digit(s[p->pos])) p->pos++;
    }
    if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || !is_digit(s[p->pos])) return perr(p, "invalid number: digit expected in exponent");
        while (p->pos < p->len && is_digit(s[p->pos])) p->pos++;
    }
    lk_status st = new_node(p, LK_JSON_NUMBER, idx);
    if (st) return st;
    p->j->nodes[*idx].off = start;
    p->j->nodes[*idx].len = p->pos - start;
    return LK_OK;
}

static lk_status parse_value(parser *p, uint32_t *idx, int depth);

static lk_status parse_container(parser *p, uint32_t *idx, int depth, int is_object) {
    if (depth >= LK_JSON_MAX_DEPTH) return perr(p, "nesting too deep");
    lk_status st = new_node(p, is_object ? LK_JSON_OBJECT : LK_JSON_ARRAY, idx);
    if (st) return st;
    const unsigned char close = is_object ? '}' : ']';
    uint32_t me = *idx, prev = 0, count = 0;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return LK_OK; }
    for (;;) {
        uint32_t key = 0, val = 0;
        skip_ws(p);
        if (is_object) {
            if (p->pos >= p->len || p->s[p->pos] != '"') return perr(p, "object key (a string) expected");
            if ((st = parse_string(p, &key))) return st;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') return perr(p, "':' expected after object key");
            p->pos++;
        }
        if ((st = parse_value(p, &val, depth + 1))) return st;
        lk_json_node *n = p->j->nodes;
        uint32_t head = is_object ? key : val;
        if (is_object) n[key].next = val;
        if (prev) n[prev].next = head; else n[me].first = head;
        prev = val;
        if (count == UINT32_MAX) return perr(p, "container too large");
        count++;
        skip_ws(p);
        if (p->pos >= p->len) return perr(p, is_object ? "unterminated object" : "unterminated array");
        unsigned char c = p->s[p->pos];
        if (c == ',') { p->pos++; continue; }
        if (c == close) { p->pos++; break; }
        return perr(p, is_object ? "',' or '}' expected" : "',' or ']' expected");
    }
    p->j->nodes[me].n = count;
    return LK_OK;
}

static int match_lit(parser *p, const char *lit) {
    size_t n = strlen(lit);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, lit, n) != 0) return 0;
    p->pos += n;
    return 1;
}

static lk_status parse_value(parser *p, uint32_t *idx, int depth) {
    skip_ws(p);
    if (p->pos >= p->len) return perr(p, "value expected, found end of input");
    unsigned char c = p->s[p->pos];
    switch (c) {
    case '{': return parse_container(p, idx, depth, 1);
    case '[': return parse_container(p, idx, depth, 0);
    case '"': return parse_string(p, idx);
    case 't': if (match_lit(p, "true")) return new_node(p, LK_JSON_TRUE, idx); break;
    case 'f': if (match_lit(p, "false")) return new_node(p, LK_JSON_FALSE, idx); break;
    case 'n': if (match_lit(p, "null")) return new_node(p, LK_JSON_NULL, idx); break;
    default:
        if (c == '-' || is_digit(c)) return parse_number(p, idx);
    }
    return perr(p, "unexpected character");
}

lk_status lk_json_parse(const char *src, size_t len, lk_json *out) {
    memset(out, 0, sizeof *out);
    size_t cap;
    if (lk_add_ov(len, 1, &cap)) return lk_fail(LK_E_FORMAT, "JSON input too large");
    out->arena = (char *)malloc(cap);
    if (!out->arena) return lk_fail(LK_E_NOMEM, "out of memory parsing JSON (%zu bytes)", len);
    out->src = src;
    out->src_len = len;
    parser p = {(const unsigned char *)src, len, 0, out};
    uint32_t root;
    lk_status st = parse_value(&p, &root, 0);
    if (!st) {
        skip_ws(&p);
        if (p.pos != p.len) st = perr(&p, "trailing characters after the JSON value");
    }
    if (st) lk_json_free(out);
    return st;
}

void lk_json_free(lk_json *j) {
    free(j->nodes);
    free(j->arena);
    memset(j, 0, sizeof *j);
}

const lk_json_node *lk_json_get(const lk_json *j, const lk_json_node *obj, const char *key) {
    if (!obj || obj->type != LK_JSON_OBJECT) return NULL;
    size_t klen = strlen(key);
    for (uint32_t k = obj->first; k; k = j->nodes[j->nodes[k].next].next) {
        const lk_json_node *kn = &j->nodes[k];
        if (kn->len == klen && memcmp(j->arena + kn->off, key, klen) == 0) return &j->nodes[kn->next];
    }
    return NULL;
}

int lk_json_int64(const lk_json *j, const lk_json_node *num, int64_t *out) {
    if (!num || num->type != LK_JSON_NUMBER) return 0;
    const char *s = j->src + num->off;
    size_t n = num->len, i = 0;
    int neg = 0;
    if (n && s[0] == '-') { neg = 1; i = 1; }
    if (i == n) return 0;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (!is_digit((unsigned char)s[i])) return 0; /* fraction or exponent */
        if (v > (UINT64_MAX - 9) / 10) return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX) return 0;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

double lk_json_double(const lk_json *j, const lk_json_node *num) {
    char buf[64];
    if (!num || num->type != LK_JSON_NUMBER || num->len >= sizeof buf) return 0.0;
    memcpy(buf, j->src + num->off, num->len);
    buf[num->len] = 0;
    return strtod(buf, NULL);
}
