/* lk_json.h: a strict JSON (RFC 8259) parser for untrusted input.
 *
 * Used for the safetensors header and tokenizer.json. The whole document is
 * parsed into a flat array of nodes; strings are unescaped once into one
 * arena (never longer than the input, so the arena is sized up front).
 * Limits: nesting depth LK_JSON_MAX_DEPTH; lone UTF-16 surrogates in \u
 * escapes, raw control characters in strings, trailing garbage, and numbers
 * outside the JSON grammar are errors. Bytes inside strings are kept as they
 * are (the tokenizer decides what to do with invalid UTF-8).
 */
#ifndef LK_JSON_H
#define LK_JSON_H

#include "lk_common.h"

#define LK_JSON_MAX_DEPTH 128

typedef enum {
    LK_JSON_NULL = 0,
    LK_JSON_FALSE,
    LK_JSON_TRUE,
    LK_JSON_NUMBER,
    LK_JSON_STRING,
    LK_JSON_ARRAY,
    LK_JSON_OBJECT,
} lk_json_type;

/* One value. Children of an array are its elements; children of an object
 * alternate key (a STRING node), value. Indices are into lk_json.nodes;
 * 0 means "none" (node 0 is the root, never anyone's child). */
typedef struct lk_json_node {
    uint32_t type;  /* lk_json_type */
    uint32_t n;     /* array: elements; object: key/value pairs */
    uint32_t first; /* first child, 0 if none */
    uint32_t next;  /* next sibling, 0 if none */
    uint64_t off;   /* STRING: offset into arena; NUMBER: offset into source */
    uint64_t len;   /* STRING: decoded byte length; NUMBER: text length */
} lk_json_node;

typedef struct lk_json {
    lk_json_node *nodes; /* nodes[0] is the document's root value */
    size_t n_nodes, cap_nodes;
    char *arena; /* decoded strings, each followed by a NUL */
    size_t arena_len;
    const char *src; /* the parsed text (borrowed; only numbers point into it) */
    size_t src_len;
} lk_json;

/* Parses src[0..len). On success *out owns its memory (lk_json_free). On
 * failure *out is empty and the message names the byte offset and line. */
lk_status lk_json_parse(const char *src, size_t len, lk_json *out);
void lk_json_free(lk_json *j);

static inline const lk_json_node *lk_json_node_at(const lk_json *j, uint32_t i) { return i ? &j->nodes[i] : NULL; }
static inline const char *lk_json_str(const lk_json *j, const lk_json_node *s) { return j->arena + s->off; }

/* Object member by key (first match), or NULL. */
const lk_json_node *lk_json_get(const lk_json *j, const lk_json_node *obj, const char *key);
/* Number node -> integer; fails (returns 0) when not an integer in range. */
int lk_json_int64(const lk_json *j, const lk_json_node *num, int64_t *out);
/* Number node -> double (strtod on the validated text). */
double lk_json_double(const lk_json *j, const lk_json_node *num);

#endif /* LK_JSON_H */
