/* lk_tokenizer.h: the Llama 3 tokenizer (Hugging Face tokenizer.json,
 * byte-level BPE) in C, with the semantics of the `tokenizers` library:
 *
 *  1. added tokens (e.g. <|eot_id|>) found in the text, leftmost-longest,
 *     become their ids (unless parse_special is 0);
 *  2. the rest is split by the Llama 3 pre-tokenizer regex, implemented by
 *     hand over Unicode classes from lk_unicode_table.h:
 *       (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3}
 *       | ?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
 *     (contractions ASCII case-insensitive);
 *  3. each piece's UTF-8 bytes go through rank-based BPE (lowest merge rank
 *     first, leftmost on ties); with ignore_merges a piece that is itself in
 *     the vocabulary is one token;
 *  4. add_bos prepends the BOS of the post-processor's template.
 * Decoding maps tokens back to bytes (byte-level alphabet, or the raw text
 * of added tokens) and replaces ill-formed UTF-8 by U+FFFD per maximal
 * subpart, as Rust's from_utf8_lossy does.
 *
 * The tokenizer is immutable after loading; encode/decode may run from many
 * threads at once.
 */
#ifndef LK_TOKENIZER_H
#define LK_TOKENIZER_H

#include "lk_common.h"

typedef struct lk_tokenizer lk_tokenizer;

typedef struct lk_ids {
    int32_t *v;
    size_t n, cap;
} lk_ids;

typedef struct lk_bytes {
    uint8_t *v;
    size_t n, cap;
} lk_bytes;

void lk_ids_free(lk_ids *a);
void lk_bytes_free(lk_bytes *b);

/* Parses tokenizer.json text; unsupported models/pre-tokenizers are errors. */
lk_status lk_tokenizer_load(const char *json, size_t len, lk_tokenizer **out);
void lk_tokenizer_free(lk_tokenizer *t);

int32_t lk_tok_n_ids(const lk_tokenizer *t);  /* largest id + 1 */
int32_t lk_tok_bos(const lk_tokenizer *t);    /* -1 if the template has none */
size_t lk_tok_n_merges(const lk_tokenizer *t);

/* Appends the ids of UTF-8 `text` to *out. */
lk_status lk_tok_encode(const lk_tokenizer *t, const char *text, size_t len, int parse_special, int add_bos,
                        lk_ids *out);
/* The pre-tokenizer alone (no special tokens): byte offsets where each piece
 * ends, appended to *ends (the regex pieces, as HF's pre_tokenize_str). */
lk_status lk_tok_pretokenize(const char *text, size_t len, lk_ids *ends);
/* Appends the raw bytes of the tokens (before UTF-8 repair) to *out; unknown
 * ids are an error naming the id. */
lk_status lk_tok_decode_bytes(const lk_tokenizer *t, const int32_t *ids, size_t n, int skip_special, lk_bytes *out);
/* Appends `in` to *out with every ill-formed UTF-8 maximal subpart replaced by U+FFFD. */
lk_status lk_utf8_repair(const uint8_t *in, size_t n, lk_bytes *out);

/* The token's string form (vocabulary key, e.g. "Ġthe", or an added token's
 * content); NULL if the id has no token. */
const char *lk_tok_string(const lk_tokenizer *t, int32_t id, size_t *len);
/* string form -> id (added tokens first), or -1 */
int32_t lk_tok_lookup(const lk_tokenizer *t, const char *s, size_t len);
int lk_tok_is_special(const lk_tokenizer *t, int32_t id);
int lk_tok_is_added(const lk_tokenizer *t, int32_t id);

#endif /* LK_TOKENIZER_H */
