/* module.c: the one binding file. It converts and validates Python arguments,
 * releases the GIL around the core, and turns each lk_status into an
 * exception whose message comes from the core (naming the file, tensor or
 * argument). Nothing else in csrc/ includes Python.h.
 *
 * Exposed: the Engine type, the Tokenizer type (lk_tokenizer_py.c style
 * helpers live here too), build_info(), estimate(), and a handful of op
 * functions used by tests and benchmarks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <time.h>

#include "cpu/lk_cpu_kernels.h"
#include "lk_cuda.h"
#include "lk_engine.h"
#include "lk_sample.h"
#include "lk_tokenizer.h"
#include "lk_unicode_table.h"

/* ---- status -> exception --------------------------------------------------- */

static PyObject *raise_status(lk_status st) {
    if (PyErr_Occurred()) return NULL; /* e.g. KeyboardInterrupt from a hook */
    PyObject *type = PyExc_RuntimeError;
    switch (st) {
    case LK_E_INVALID:
    case LK_E_FORMAT: type = PyExc_ValueError; break;
    case LK_E_IO: type = PyExc_OSError; break;
    case LK_E_NOMEM:
    case LK_E_DEVICE_OOM: type = PyExc_MemoryError; break;
    case LK_E_INTERRUPTED: type = PyExc_KeyboardInterrupt; break;
    default: break;
    }
    PyErr_SetString(type, lk_last_error());
    return NULL;
}

/* ---- small converters ------------------------------------------------------ */

static int dict_int(PyObject *d, const char *key, int32_t *out, int required) {
    PyObject *v = PyDict_GetItemString(d, key); /* borrowed */
    if (!v) {
        if (required) PyErr_Format(PyExc_KeyError, "config is missing '%s'", key);
        return !required;
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return 0;
    if (x < INT32_MIN || x > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "config '%s' = %lld is out of range", key, x);
        return 0;
    }
    *out = (int32_t)x;
    return 1;
}

static int dict_double(PyObject *d, const char *key, double *out, int required) {
    PyObject *v = PyDict_GetItemString(d, key);
    if (!v) {
        if (required) PyErr_Format(PyExc_KeyError, "config is missing '%s'", key);
        return !required;
    }
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) return 0;
    *out = x;
    return 1;
}

/* a normalised config dict (llama_kernel.config.ModelConfig.to_core()) -> lk_config */
static int parse_config(PyObject *d, lk_config *c) {
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "config must be a dict");
        return 0;
    }
    memset(c, 0, sizeof *c);
    double eps = 1e-5;
    c->rope_factor = 1.0;
    int ok = dict_int(d, "dim", &c->dim, 1) && dict_int(d, "hidden_dim", &c->hidden_dim, 1) &&
             dict_int(d, "n_layers", &c->n_layers, 1) && dict_int(d, "n_heads", &c->n_heads, 1) &&
             dict_int(d, "n_kv_heads", &c->n_kv_heads, 1) && dict_int(d, "head_dim", &c->head_dim, 1) &&
             dict_int(d, "vocab_size", &c->vocab_size, 1) && dict_int(d, "max_pos", &c->max_pos, 0) &&
             dict_double(d, "rms_eps", &eps, 1) && dict_double(d, "rope_theta", &c->rope_theta, 1) &&
             dict_int(d, "rope_type", &c->rope_type, 1) && dict_double(d, "rope_factor", &c->rope_factor, 0) &&
             dict_double(d, "rope_low_freq_factor", &c->rope_low_freq_factor, 0) &&
             dict_double(d, "rope_high_freq_factor", &c->rope_high_freq_factor, 0) &&
             dict_int(d, "rope_orig_max_pos", &c->rope_orig_max_pos, 0) &&
             dict_int(d, "tied_embeddings", &c->tied_embeddings, 0);
    c->rms_eps = (float)eps;
    return ok;
}

static int parse_device(const char *s, int32_t *out) {
    if (strcmp(s, "cpu") == 0) *out = LK_DEV_CPU;
    else if (strcmp(s, "cuda") == 0) *out = LK_DEV_CUDA;
    else {
        PyErr_Format(PyExc_ValueError, "device = '%s' is not 'cpu' or 'cuda'", s);
        return 0;
    }
    return 1;
}

static int parse_quant(const char *s, int32_t *out) {
    if (strcmp(s, "int4") == 0) *out = LK_WFMT_Q4;
    else if (strcmp(s, "none") == 0) *out = LK_WFMT_BF16;
    else {
        PyErr_Format(PyExc_ValueError, "quantization = '%s' is not 'int4' or 'none'", s);
        return 0;
    }
    return 1;
}

static PyObject *plan_to_dict(const lk_mem_plan *p) {
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n}", "weights_bytes", (Py_ssize_t)p->weights,
                         "weights_layers_bytes", (Py_ssize_t)p->weights_layers, "weights_embed_bytes",
                         (Py_ssize_t)p->weights_embed, "weights_lm_head_bytes", (Py_ssize_t)p->weights_lm_head,
                         "kv_cache_per_token_bytes", (Py_ssize_t)p->kv_per_token, "kv_cache_bytes",
                         (Py_ssize_t)p->kv_cache, "rope_bytes", (Py_ssize_t)p->rope, "activations_bytes",
                         (Py_ssize_t)p->activations, "workspace_bytes", (Py_ssize_t)p->workspace, "total_bytes",
                         (Py_ssize_t)p->total);
}

/* a Python sequence of ints -> malloc'd int32 array; names `what` in errors */
static int32_t *int_seq(PyObject *obj, Py_ssize_t *n_out, const char *what) {
    PyObject *seq = PySequence_Fast(obj, "");
    if (!seq) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a sequence of ints, not %.80s", what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int32_t *a = (int32_t *)PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!a) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyLong_Check(it) && !PyIndex_Check(it)) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] must be an int, not %.80s", what, i, Py_TYPE(it)->tp_name);
            goto fail;
        }
        long long v = PyLong_AsLongLong(it);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s[%zd] is out of range", what, i);
            goto fail;
        }
        if (v < INT32_MIN || v > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "%s[%zd] = %lld is out of range", what, i, v);
            goto fail;
        }
        a[i] = (int32_t)v;
    }
    Py_DECREF(seq);
    *n_out = n;
    return a;
fail:
    Py_DECREF(seq);
    PyMem_Free(a);
    return NULL;
}

/* ---- hooks: called from the core with the GIL released --------------------- */

typedef struct {
    PyThreadState *ts;  /* saved thread state while the GIL is released */
    PyObject *callback; /* on_tokens(list[(seq, token)]) -> bool | None, borrowed */
    PyObject *progress; /* progress(done, total), borrowed */
    double last_check;
    int failed;         /* a Python exception is pending */
} hook_ctx;

static double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Ctrl-C: take the GIL at most every 20 ms to run signal handlers */
static int hook_check(void *p) {
    hook_ctx *h = (hook_ctx *)p;
    if (h->failed) return 1;
    double t = mono();
    if (t - h->last_check < 0.02) return 0;
    h->last_check = t;
    PyEval_RestoreThread(h->ts);
    if (PyErr_CheckSignals() != 0) h->failed = 1;
    h->ts = PyEval_SaveThread();
    return h->failed;
}

static int hook_tokens(void *p, const int32_t *seqs, const int32_t *toks, int n) {
    hook_ctx *h = (hook_ctx *)p;
    if (h->failed) return 1;
    if (!h->callback) return hook_check(p);
    PyEval_RestoreThread(h->ts);
    PyObject *lst = PyList_New(n), *res = NULL;
    if (lst) {
        for (int i = 0; i < n; i++) {
            PyObject *t = Py_BuildValue("(ii)", seqs[i], toks[i]);
            if (!t) {
                Py_CLEAR(lst);
                break;
            }
            PyList_SET_ITEM(lst, i, t);
        }
    }
    if (lst) res = PyObject_CallOneArg(h->callback, lst);
    if (!res) h->failed = 1;
    else if (res == Py_False) h->failed = 2; /* the callback asked to stop: not an error */
    Py_XDECREF(res);
    Py_XDECREF(lst);
    if (!h->failed && PyErr_CheckSignals() != 0) h->failed = 1;
    h->last_check = mono();
    h->ts = PyEval_SaveThread();
    return h->failed != 0;
}

static void hook_progress(void *p, uint64_t done, uint64_t total) {
    hook_ctx *h = (hook_ctx *)p;
    if (!h->progress || h->failed) return;
    PyEval_RestoreThread(h->ts);
    PyObject *res = PyObject_CallFunction(h->progress, "KK", (unsigned long long)done, (unsigned long long)total);
    if (!res) h->failed = 1;
    Py_XDECREF(res);
    h->ts = PyEval_SaveThread();
}

/* ============================================================================
 * Engine
 * ==========================================================================*/

typedef struct {
    PyObject_HEAD
    lk_engine *e;
} EngineObject;

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"config",        "paths",      "device",          "quantization", "max_seq_len",
                             "batch_size",    "prefill_chunk", "flash_attention", "cuda_graphs", "n_threads",
                             "seed",          "progress",   "matmul_variant",  NULL};
    PyObject *cfg_d = NULL, *paths = Py_None, *progress = Py_None;
    const char *device = "cpu", *quant = "int4";
    int max_seq = 4096, batch = 1, chunk = 256, flash = 1, graphs = 1, threads = 0, variant = 0;
    unsigned long long seed = 0;
    if (self->e) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Ossiiippi$KOi", kwlist, &cfg_d, &paths, &device, &quant, &max_seq,
                                     &batch, &chunk, &flash, &graphs, &threads, &seed, &progress, &variant))
        return -1;
    lk_config cfg;
    lk_engine_opts o;
    memset(&o, 0, sizeof o);
    if (!parse_config(cfg_d, &cfg) || !parse_device(device, &o.device) || !parse_quant(quant, &o.quant)) return -1;
    o.max_seq_len = max_seq;
    o.batch_size = batch;
    o.prefill_chunk = chunk;
    o.flash_attention = flash;
    o.cuda_graphs = graphs;
    o.n_threads = threads;
    o.matmul_variant = variant;
    PyObject *seq = NULL;
    const char **cpaths = NULL;
    Py_ssize_t np = 0;
    int ret = -1;
    if (paths != Py_None) {
        seq = PySequence_Fast(paths, "paths must be a list of file names");
        if (!seq) goto exit;
        np = PySequence_Fast_GET_SIZE(seq);
        cpaths = (const char **)PyMem_Malloc((size_t)(np ? np : 1) * sizeof(char *));
        if (!cpaths) {
            PyErr_NoMemory();
            goto exit;
        }
        for (Py_ssize_t i = 0; i < np; i++) {
            PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyUnicode_Check(it)) {
                PyErr_Format(PyExc_TypeError, "paths[%zd] must be a str", i);
                goto exit;
            }
            if (!(cpaths[i] = PyUnicode_AsUTF8(it))) goto exit;
        }
        if (np == 0) {
            PyErr_SetString(PyExc_ValueError, "paths is empty: give the checkpoint's .safetensors files");
            goto exit;
        }
    }
    hook_ctx h = {NULL, NULL, progress != Py_None ? progress : NULL, mono(), 0};
    lk_engine_hooks hk = {hook_check, NULL, hook_progress, &h};
    lk_status st;
    lk_engine *e = NULL;
    h.ts = PyEval_SaveThread();
    st = lk_engine_create(&cfg, &o, cpaths, (int)np, (uint64_t)seed, &hk, &e);
    PyEval_RestoreThread(h.ts);
    if (st) {
        raise_status(st);
        goto exit;
    }
    self->e = e;
    ret = 0;
exit:
    PyMem_Free(cpaths);
    Py_XDECREF(seq);
    return ret;
}

static void Engine_dealloc(EngineObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (self->e) {
        lk_engine *e = self->e;
        self->e = NULL;
        Py_BEGIN_ALLOW_THREADS lk_engine_destroy(e);
        Py_END_ALLOW_THREADS
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int engine_ready(EngineObject *self) {
    if (!self->e) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *Engine_logits(EngineObject *self, PyObject *args) {
    PyObject *ids_obj = NULL, *arr = NULL;
    int32_t *ids = NULL;
    Py_ssize_t n = 0;
    if (!engine_ready(self) || !PyArg_ParseTuple(args, "O", &ids_obj)) return NULL;
    if (!(ids = int_seq(ids_obj, &n, "input_ids"))) return NULL;
    const lk_config *c = lk_engine_config(self->e);
    if (n < 1 || n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "input_ids is empty");
        goto exit;
    }
    npy_intp dims[2] = {n, c->vocab_size};
    arr = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!arr) goto exit;
    hook_ctx h = {NULL, NULL, NULL, mono(), 0};
    lk_engine_hooks hk = {hook_check, NULL, NULL, &h};
    h.ts = PyEval_SaveThread();
    lk_status st = lk_engine_logits(self->e, ids, (int32_t)n, (float *)PyArray_DATA((PyArrayObject *)arr), &hk);
    PyEval_RestoreThread(h.ts);
    if (st) {
        Py_CLEAR(arr);
        raise_status(st);
    }
exit:
    PyMem_Free(ids);
    return arr;
}

static PyObject *Engine_generate(EngineObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"prompts",   "max_new_tokens", "temperature", "top_k",    "top_p",   "repetition_penalty",
                             "seed",      "stop_ids",       "ignore_eos",  "callback", "seq_id0", NULL};
    PyObject *prompts = NULL, *stop_obj = Py_None, *callback = Py_None, *result = NULL, *seqs = NULL;
    int max_new = 0, top_k = 0, ignore_eos = 0;
    float temperature = 0.0f, top_p = 1.0f, rep = 1.0f;
    unsigned long long seed = 0, seq_id0 = 0;
    int32_t *tokens = NULL, *lens = NULL, *stop = NULL, *out = NULL, *out_lens = NULL;
    Py_ssize_t n_stop = 0;
    if (!engine_ready(self)) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oi|fiffKOpOK", kwlist, &prompts, &max_new, &temperature, &top_k,
                                     &top_p, &rep, &seed, &stop_obj, &ignore_eos, &callback, &seq_id0))
        return NULL;
    if (callback != Py_None && !PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "callback must be callable or None");
        return NULL;
    }
    seqs = PySequence_Fast(prompts, "prompts must be a list of token-id lists");
    if (!seqs) return NULL;
    Py_ssize_t ns = PySequence_Fast_GET_SIZE(seqs), total = 0;
    if (ns < 1 || ns > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "prompts is empty");
        goto exit;
    }
    if (max_new < 0) {
        PyErr_Format(PyExc_ValueError, "max_new_tokens = %d must be >= 0", max_new);
        goto exit;
    }
    lens = (int32_t *)PyMem_Malloc((size_t)ns * sizeof(int32_t));
    if (!lens) {
        PyErr_NoMemory();
        goto exit;
    }
    /* flatten */
    {
        int32_t **parts = (int32_t **)PyMem_Calloc((size_t)ns, sizeof(int32_t *));
        if (!parts) {
            PyErr_NoMemory();
            goto exit;
        }
        int ok = 1;
        for (Py_ssize_t i = 0; i < ns && ok; i++) {
            Py_ssize_t n = 0;
            char what[48];
            snprintf(what, sizeof what, "prompts[%zd]", i);
            parts[i] = int_seq(PySequence_Fast_GET_ITEM(seqs, i), &n, what);
            if (!parts[i]) ok = 0;
            else if (n < 1) {
                PyErr_Format(PyExc_ValueError, "prompts[%zd] is empty: a prompt needs at least one token", i);
                ok = 0;
            } else if (n > INT32_MAX || total > PY_SSIZE_T_MAX - n) {
                PyErr_Format(PyExc_ValueError, "prompts[%zd] is too long", i);
                ok = 0;
            } else {
                lens[i] = (int32_t)n;
                total += n;
            }
        }
        if (ok && !(tokens = (int32_t *)PyMem_Malloc((size_t)total * sizeof(int32_t)))) {
            PyErr_NoMemory();
            ok = 0;
        }
        Py_ssize_t off = 0;
        for (Py_ssize_t i = 0; i < ns; i++) {
            if (ok) {
                memcpy(tokens + off, parts[i], (size_t)lens[i] * sizeof(int32_t));
                off += lens[i];
            }
            PyMem_Free(parts[i]);
        }
        PyMem_Free(parts);
        if (!ok) goto exit;
    }
    if (stop_obj != Py_None && !(stop = int_seq(stop_obj, &n_stop, "stop_ids"))) goto exit;
    size_t out_n = (size_t)ns * (size_t)(max_new ? max_new : 1);
    out = (int32_t *)PyMem_Malloc(out_n * sizeof(int32_t));
    out_lens = (int32_t *)PyMem_Calloc((size_t)ns, sizeof(int32_t));
    if (!out || !out_lens) {
        PyErr_NoMemory();
        goto exit;
    }
    lk_gen_request rq = {(int32_t)ns, tokens, lens, max_new,        {temperature, top_k, top_p, rep, seed},
                         stop, (int32_t)n_stop, ignore_eos, seq_id0, out, out_lens};
    lk_gen_stats stats;
    hook_ctx h = {NULL, callback != Py_None ? callback : NULL, NULL, mono(), 0};
    lk_engine_hooks hk = {hook_check, hook_tokens, NULL, &h};
    h.ts = PyEval_SaveThread();
    lk_status st = lk_engine_generate(self->e, &rq, &hk, &stats);
    PyEval_RestoreThread(h.ts);
    if (st && !(st == LK_E_INTERRUPTED && h.failed == 2)) {
        raise_status(st);
        goto exit;
    }
    PyObject *lists = PyList_New(ns);
    if (!lists) goto exit;
    for (Py_ssize_t i = 0; i < ns; i++) {
        PyObject *l = PyList_New(out_lens[i]);
        if (!l) {
            Py_DECREF(lists);
            goto exit;
        }
        for (int32_t j = 0; j < out_lens[i]; j++) {
            PyObject *v = PyLong_FromLong(out[(size_t)i * (size_t)max_new + (size_t)j]);
            if (!v) {
                Py_DECREF(l);
                Py_DECREF(lists);
                goto exit;
            }
            PyList_SET_ITEM(l, j, v);
        }
        PyList_SET_ITEM(lists, i, l);
    }
    PyObject *sd = Py_BuildValue("{s:d,s:d,s:d,s:L,s:L,s:L}", "prefill_seconds", stats.prefill_s,
                                 "first_token_seconds", stats.first_token_s, "decode_seconds", stats.decode_s,
                                 "prefill_tokens", (long long)stats.prefill_tokens, "decode_steps",
                                 (long long)stats.decode_steps, "generated_tokens", (long long)stats.generated_tokens);
    if (!sd) {
        Py_DECREF(lists);
        goto exit;
    }
    result = PyTuple_Pack(2, lists, sd);
    Py_DECREF(lists);
    Py_DECREF(sd);
exit:
    Py_XDECREF(seqs);
    PyMem_Free(tokens);
    PyMem_Free(lens);
    PyMem_Free(stop);
    PyMem_Free(out);
    PyMem_Free(out_lens);
    return result;
}

static PyObject *Engine_memory(EngineObject *self, PyObject *Py_UNUSED(a)) {
    if (!engine_ready(self)) return NULL;
    lk_mem_plan used, plan;
    Py_BEGIN_ALLOW_THREADS lk_engine_memory(self->e, &used, &plan);
    Py_END_ALLOW_THREADS
    PyObject *u = plan_to_dict(&used), *p = plan_to_dict(&plan), *r = NULL;
    if (u && p) r = Py_BuildValue("{s:O,s:O}", "used", u, "plan", p);
    Py_XDECREF(u);
    Py_XDECREF(p);
    return r;
}

static PyObject *Engine_get_config(EngineObject *self, void *Py_UNUSED(c)) {
    if (!engine_ready(self)) return NULL;
    const lk_config *c = lk_engine_config(self->e);
    const lk_engine_opts *o = lk_engine_opts_get(self->e);
    return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:s,s:s,s:i}", "dim", c->dim, "hidden_dim",
                         c->hidden_dim, "n_layers", c->n_layers, "n_heads", c->n_heads, "n_kv_heads", c->n_kv_heads,
                         "head_dim", c->head_dim, "vocab_size", c->vocab_size, "tied_embeddings", c->tied_embeddings,
                         "max_seq_len", o->max_seq_len, "batch_size", o->batch_size, "prefill_chunk",
                         o->prefill_chunk, "backend", lk_engine_backend_name(self->e), "quantization",
                         o->quant == LK_WFMT_Q4 ? "int4" : "none", "n_threads", o->n_threads);
}

static PyMethodDef Engine_methods[] = {
    {"logits", (PyCFunction)Engine_logits, METH_VARARGS,
     "logits(input_ids) -> float32 array [len, vocab]: logits at every position of one prompt."},
    {"generate", (PyCFunction)(void (*)(void))Engine_generate, METH_VARARGS | METH_KEYWORDS,
     "generate(prompts, max_new_tokens, temperature=0, top_k=0, top_p=1, repetition_penalty=1, seed=0,\n"
     "         stop_ids=None, ignore_eos=False, callback=None, seq_id0=0) -> (list[list[int]], stats)\n"
     "Runs the C generation loop with the GIL released. callback(list[(seq, token)]) is called after\n"
     "every step; returning False stops generation."},
    {"memory", (PyCFunction)Engine_memory, METH_NOARGS,
     "memory() -> {'used': ..., 'plan': ...}: bytes allocated by part, and the plan's figures."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"config", (getter)Engine_get_config, NULL, "the loaded model's shape and engine options", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Engine_slots[] = {
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, (void *)Engine_init},
    {Py_tp_dealloc, (void *)Engine_dealloc},
    {Py_tp_methods, Engine_methods},
    {Py_tp_getset, Engine_getset},
    {Py_tp_doc, "Engine(config, paths=None, device='cpu', quantization='int4', max_seq_len=4096, batch_size=1,\n"
                "       prefill_chunk=256, flash_attention=True, cuda_graphs=True, n_threads=0, *, seed=0,\n"
                "       progress=None, matmul_variant=0)\n"
                "A loaded model. paths=None builds a synthetic model with random weights from seed."},
    {0, NULL},
};

static PyType_Spec Engine_spec = {"llama_kernel._C.Engine", sizeof(EngineObject), 0, Py_TPFLAGS_DEFAULT, Engine_slots};

/* ============================================================================
 * Module functions
 * ==========================================================================*/

static PyObject *mod_estimate(PyObject *m, PyObject *args, PyObject *kw) {
    (void)m;
    static char *kwlist[] = {"config", "device", "quantization", "max_seq_len", "batch_size", "prefill_chunk",
                             "n_threads", NULL};
    PyObject *cfg_d;
    const char *device = "cpu", *quant = "int4";
    int max_seq = 4096, batch = 1, chunk = 256, threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|ssiiii", kwlist, &cfg_d, &device, &quant, &max_seq, &batch, &chunk,
                                     &threads))
        return NULL;
    lk_config c;
    lk_engine_opts o;
    memset(&o, 0, sizeof o);
    if (!parse_config(cfg_d, &c) || !parse_device(device, &o.device) || !parse_quant(quant, &o.quant)) return NULL;
    o.max_seq_len = max_seq;
    o.batch_size = batch;
    o.prefill_chunk = chunk;
    o.n_threads = threads > 0 ? threads : lk_default_threads();
    lk_mem_plan p;
    lk_status st = lk_plan_memory(&c, &o, &p);
    if (st) return raise_status(st);
    return plan_to_dict(&p);
}

static PyObject *mod_build_info(PyObject *m, PyObject *Py_UNUSED(a)) {
    (void)m;
    lk_cuda_info ci;
    Py_BEGIN_ALLOW_THREADS lk_cuda_query(&ci);
    Py_END_ALLOW_THREADS
    const lk_cpu_kernels *k = lk_cpu_kernels_get();
    PyObject *d = Py_BuildValue("{s:O,s:s,s:s,s:i,s:s,s:i,s:i,s:s}", "cuda", ci.compiled ? Py_True : Py_False,
                                "cuda_archs", lk_cuda_archs(), "cpu_kernels", k->name, "q4_group", LK_Q4_GROUP,
                                "cuda_error", ci.error, "openmp_threads", lk_default_threads(), "q4_version",
                                LK_Q4_VERSION, "unicode_version", LK_UNICODE_VERSION);
    if (!d) return NULL;
    if (ci.compiled) {
        char ver[32];
        snprintf(ver, sizeof ver, "%d.%d", ci.runtime_version / 1000, (ci.runtime_version % 1000) / 10);
        PyObject *v = PyUnicode_FromString(ver);
        if (!v || PyDict_SetItemString(d, "cuda_version", v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
        PyObject *extra = Py_BuildValue("{s:i,s:i}", "driver_version", ci.driver_version, "device_count",
                                        ci.device_count);
        if (!extra || PyDict_Update(d, extra) < 0) {
            Py_XDECREF(extra);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(extra);
        if (ci.device_count > 0) {
            char cc[16];
            snprintf(cc, sizeof cc, "%d.%d", ci.cc_major, ci.cc_minor);
            PyObject *g = Py_BuildValue("{s:s,s:s,s:i,s:O,s:O,s:n,s:n}", "device_name", ci.device_name,
                                        "compute_capability", cc, "sm_count", ci.sm_count, "arch_supported",
                                        ci.arch_supported ? Py_True : Py_False, "wgmma",
                                        ci.wgmma ? Py_True : Py_False, "gpu_free_bytes",
                                        (Py_ssize_t)ci.free_bytes, "gpu_total_bytes", (Py_ssize_t)ci.total_bytes);
            if (!g || PyDict_Update(d, g) < 0) {
                Py_XDECREF(g);
                Py_DECREF(d);
                return NULL;
            }
            Py_DECREF(g);
        }
    }
    return d;
}

static PyObject *mod_cuda_check(PyObject *m, PyObject *Py_UNUSED(a)) {
    (void)m;
    lk_status st;
    Py_BEGIN_ALLOW_THREADS st = lk_cuda_check_usable();
    Py_END_ALLOW_THREADS
    if (st) return raise_status(st);
    Py_RETURN_NONE;
}

/* float32 [n, k] array -> (qs uint8 [n, k/2], params uint16 [n, k/G, 2]) */
static PyObject *mod_q4_quantize(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *wo, *res = NULL;
    PyArrayObject *w = NULL, *qs = NULL, *pr = NULL;
    if (!PyArg_ParseTuple(args, "O", &wo)) return NULL;
    w = (PyArrayObject *)PyArray_FROMANY(wo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    if (!w) return NULL;
    npy_intp n = PyArray_DIM(w, 0), k = PyArray_DIM(w, 1);
    if (k % LK_Q4_GROUP) {
        PyErr_Format(PyExc_ValueError, "q4_quantize: k = %zd is not a multiple of the group size %d", (Py_ssize_t)k,
                     LK_Q4_GROUP);
        goto exit;
    }
    npy_intp qd[2] = {n, k / 2}, pd[3] = {n, k / LK_Q4_GROUP, 2};
    qs = (PyArrayObject *)PyArray_SimpleNew(2, qd, NPY_UINT8);
    pr = (PyArrayObject *)PyArray_SimpleNew(3, pd, NPY_UINT16);
    if (!qs || !pr) goto exit;
    npy_intp bad = -1;
    Py_BEGIN_ALLOW_THREADS for (npy_intp r = 0; r < n; r++) if (lk_q4_quantize_row_ref(
        (const float *)PyArray_DATA(w) + r * k, k, (uint8_t *)PyArray_DATA(qs) + r * (k / 2),
        (lk_q4_params *)PyArray_DATA(pr) + r * (k / LK_Q4_GROUP))) {
        bad = r;
        break;
    }
    Py_END_ALLOW_THREADS if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "q4_quantize: row %zd has a non-finite value or a range too large for fp16",
                     (Py_ssize_t)bad);
        goto exit;
    }
    res = PyTuple_Pack(2, (PyObject *)qs, (PyObject *)pr);
exit:
    Py_XDECREF(w);
    Py_XDECREF(qs);
    Py_XDECREF(pr);
    return res;
}

static int q4_args(PyObject *qo, PyObject *po, PyArrayObject **qs, PyArrayObject **pr, npy_intp *n, npy_intp *k) {
    *qs = (PyArrayObject *)PyArray_FROMANY(qo, NPY_UINT8, 2, 2, NPY_ARRAY_IN_ARRAY);
    if (!*qs) return 0;
    *pr = (PyArrayObject *)PyArray_FROMANY(po, NPY_UINT16, 3, 3, NPY_ARRAY_IN_ARRAY);
    if (!*pr) return 0;
    *n = PyArray_DIM(*qs, 0);
    *k = PyArray_DIM(*qs, 1) * 2;
    if (PyArray_DIM(*pr, 0) != *n || PyArray_DIM(*pr, 1) * LK_Q4_GROUP != *k || PyArray_DIM(*pr, 2) != 2) {
        PyErr_Format(PyExc_ValueError, "q4: params shape must be [%zd, %zd, 2] for qs of shape [%zd, %zd]",
                     (Py_ssize_t)*n, (Py_ssize_t)(*k / LK_Q4_GROUP), (Py_ssize_t)*n, (Py_ssize_t)(*k / 2));
        return 0;
    }
    if (*k % LK_Q4_GROUP) {
        PyErr_Format(PyExc_ValueError, "q4: k = %zd is not a multiple of %d", (Py_ssize_t)*k, LK_Q4_GROUP);
        return 0;
    }
    return 1;
}

static PyObject *mod_q4_dequantize(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *qo, *po;
    PyArrayObject *qs = NULL, *pr = NULL, *out = NULL;
    npy_intp n, k;
    if (!PyArg_ParseTuple(args, "OO", &qo, &po)) return NULL;
    if (q4_args(qo, po, &qs, &pr, &n, &k)) {
        npy_intp d[2] = {n, k};
        out = (PyArrayObject *)PyArray_SimpleNew(2, d, NPY_FLOAT32);
        if (out)
            for (npy_intp r = 0; r < n; r++)
                lk_q4_dequantize_row_ref((const uint8_t *)PyArray_DATA(qs) + r * (k / 2),
                                         (const lk_q4_params *)PyArray_DATA(pr) + r * (k / LK_Q4_GROUP), k,
                                         (float *)PyArray_DATA(out) + r * k);
    }
    Py_XDECREF(qs);
    Py_XDECREF(pr);
    return (PyObject *)out;
}

/* y = x W^T with the CPU kernels (simd=True: the fast path, if the CPU has it) */
static PyObject *mod_cpu_matmul_q4(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *xo, *qo, *po;
    int simd = 1;
    PyArrayObject *x = NULL, *qs = NULL, *pr = NULL, *y = NULL;
    npy_intp n, k;
    if (!PyArg_ParseTuple(args, "OOO|p", &xo, &qo, &po, &simd)) return NULL;
    if (!q4_args(qo, po, &qs, &pr, &n, &k)) goto exit;
    x = (PyArrayObject *)PyArray_FROMANY(xo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    if (!x) goto exit;
    if (PyArray_DIM(x, 1) != k) {
        PyErr_Format(PyExc_ValueError, "cpu_matmul_q4: x has %zd columns, W has k = %zd", (Py_ssize_t)PyArray_DIM(x, 1),
                     (Py_ssize_t)k);
        goto exit;
    }
    npy_intp M = PyArray_DIM(x, 0), d[2] = {M, n};
    y = (PyArrayObject *)PyArray_SimpleNew(2, d, NPY_FLOAT32);
    if (!y) goto exit;
    const lk_cpu_kernels *kk = simd ? lk_cpu_kernels_get() : lk_cpu_kernels_ref();
    float *buf = (float *)PyMem_Malloc((size_t)(4 * k) * sizeof(float));
    if (!buf) {
        Py_CLEAR(y);
        PyErr_NoMemory();
        goto exit;
    }
    for (npy_intp n0 = 0; n0 < n; n0 += 4) {
        int nr = n - n0 < 4 ? (int)(n - n0) : 4;
        for (int r = 0; r < 4; r++) {
            if (r < nr)
                kk->dequant_q4((const uint8_t *)PyArray_DATA(qs) + (n0 + r) * (k / 2),
                               (const lk_q4_params *)PyArray_DATA(pr) + (n0 + r) * (k / LK_Q4_GROUP), k, buf + r * k);
            else memset(buf + r * k, 0, (size_t)k * sizeof(float));
        }
        for (npy_intp i = 0; i < M; i++) {
            float o[4];
            kk->dot4(buf, k, (const float *)PyArray_DATA(x) + i * k, o);
            for (int r = 0; r < nr; r++) ((float *)PyArray_DATA(y))[i * n + n0 + r] = o[r];
        }
    }
    PyMem_Free(buf);
exit:
    Py_XDECREF(x);
    Py_XDECREF(qs);
    Py_XDECREF(pr);
    return (PyObject *)y;
}

/* positions (one per row) and the optional `seen` lists (token ids per row) of the
 * sampler test entry points -> int32 [B] and a bitmap [B][ceil(V/32)]; NULL with an exception */
static int sampler_rows(PyObject *poso, PyObject *seen_o, npy_intp B, npy_intp V, int32_t **pos_out,
                        uint32_t **seen_out) {
    Py_ssize_t np_ = 0;
    int32_t *pos = int_seq(poso, &np_, "positions");
    uint32_t *seen = NULL;
    PyObject *s = NULL;
    if (!pos) return 0;
    if (np_ != B) {
        PyErr_Format(PyExc_ValueError, "positions has %zd entries for %zd rows", np_, (Py_ssize_t)B);
        goto fail;
    }
    const size_t words = ((size_t)V + 31) / 32;
    if (!(seen = (uint32_t *)PyMem_Calloc((size_t)B * words + 1, 4))) {
        PyErr_NoMemory();
        goto fail;
    }
    if (seen_o != Py_None) {
        if (!(s = PySequence_Fast(seen_o, "seen must be a list of token lists"))) goto fail;
        if (PySequence_Fast_GET_SIZE(s) != B) {
            PyErr_SetString(PyExc_ValueError, "seen must have one list per row");
            goto fail;
        }
        for (npy_intp r = 0; r < B; r++) {
            Py_ssize_t n = 0;
            int32_t *t = int_seq(PySequence_Fast_GET_ITEM(s, r), &n, "seen");
            if (!t) goto fail;
            for (Py_ssize_t i = 0; i < n; i++)
                if (t[i] >= 0 && t[i] < V) seen[(size_t)r * words + (size_t)(t[i] >> 5)] |= 1u << (t[i] & 31);
            PyMem_Free(t);
        }
        Py_CLEAR(s);
    }
    *pos_out = pos;
    *seen_out = seen;
    return 1;
fail:
    Py_XDECREF(s);
    PyMem_Free(pos);
    PyMem_Free(seen);
    return 0;
}

/* the CPU sampler over rows of logits, for tests of the rule */
static PyObject *mod_sample_cpu(PyObject *m, PyObject *args, PyObject *kw) {
    (void)m;
    static char *kwlist[] = {"logits", "positions", "temperature", "top_k", "top_p", "repetition_penalty",
                             "seed",   "seq_id0",   "seen",        NULL};
    PyObject *lo, *poso, *seen_o = Py_None;
    float temperature = 0.0f, top_p = 1.0f, rep = 1.0f;
    int top_k = 0;
    unsigned long long seed = 0, seq0 = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|fiffKKO", kwlist, &lo, &poso, &temperature, &top_k, &top_p, &rep,
                                     &seed, &seq0, &seen_o))
        return NULL;
    lk_sampling sp = {temperature, top_k, top_p, rep, seed};
    lk_status st = lk_sampling_validate(&sp);
    if (st) return raise_status(st);
    PyArrayObject *l = (PyArrayObject *)PyArray_FROMANY(lo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY);
    if (!l) return NULL;
    PyObject *res = NULL;
    int32_t *pos = NULL;
    uint32_t *seen = NULL;
    npy_intp B = PyArray_DIM(l, 0), V = PyArray_DIM(l, 1);
    size_t words = ((size_t)V + 31) / 32;
    if (!sampler_rows(poso, seen_o, B, V, &pos, &seen)) goto exit;
    npy_intp d[1] = {B};
    res = PyArray_SimpleNew(1, d, NPY_INT32);
    if (!res) goto exit;
    for (npy_intp r = 0; r < B; r++) {
        /* as the engine: row r samples the token for position pos[r] + 1 */
        float u = lk_uniform(seed, seq0 + (uint64_t)r, (uint64_t)pos[r] + 1);
        ((int32_t *)PyArray_DATA((PyArrayObject *)res))[r] =
            lk_sample_row((float *)PyArray_DATA(l) + r * V, (int32_t)V, seen + (size_t)r * words, &sp, u);
    }
exit:
    Py_DECREF(l);
    PyMem_Free(pos);
    PyMem_Free(seen);
    return res;
}

static PyObject *mod_uniform(PyObject *m, PyObject *args) {
    (void)m;
    unsigned long long seed, seq, pos;
    if (!PyArg_ParseTuple(args, "KKK", &seed, &seq, &pos)) return NULL;
    return PyFloat_FromDouble(lk_uniform(seed, seq, pos));
}

/* safetensors header as the C reader validates it: [(name, dtype, shape, nbytes)] */
static PyObject *mod_safetensors_info(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *path_o;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &path_o)) return NULL;
    lk_st_file f;
    lk_status st;
    const char *path = PyBytes_AS_STRING(path_o);
    Py_BEGIN_ALLOW_THREADS st = lk_st_open(path, &f);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_o);
    if (st) return raise_status(st);
    PyObject *lst = PyList_New((Py_ssize_t)f.n_tensors);
    for (size_t i = 0; lst && i < f.n_tensors; i++) {
        const lk_st_tensor *t = &f.tensors[i];
        PyObject *shape = PyTuple_New(t->ndim);
        if (!shape) {
            Py_CLEAR(lst);
            break;
        }
        for (int d = 0; d < t->ndim; d++) PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(t->shape[d]));
        PyObject *it = Py_BuildValue("(ssNn)", t->name, lk_dtype_name(t->dtype), shape, (Py_ssize_t)t->nbytes);
        if (!it) {
            Py_CLEAR(lst);
            break;
        }
        PyList_SET_ITEM(lst, (Py_ssize_t)i, it);
    }
    lk_st_close(&f);
    return lst;
}

static PyObject *mod_rope_inv_freq(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *cfg_d;
    if (!PyArg_ParseTuple(args, "O", &cfg_d)) return NULL;
    lk_config c;
    if (!parse_config(cfg_d, &c)) return NULL;
    lk_status st = lk_config_validate(&c);
    if (st) return raise_status(st);
    npy_intp d[1] = {c.head_dim / 2};
    PyObject *a = PyArray_SimpleNew(1, d, NPY_FLOAT64);
    if (a) lk_rope_inv_freq(&c, (double *)PyArray_DATA((PyArrayObject *)a));
    return a;
}


/* ============================================================================
 * Tokenizer
 * ==========================================================================*/

typedef struct {
    PyObject_HEAD
    lk_tokenizer *t;
} TokenizerObject;

static int Tokenizer_init(TokenizerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"data", NULL};
    Py_buffer buf;
    if (self->t) {
        PyErr_SetString(PyExc_RuntimeError, "Tokenizer is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*", kwlist, &buf)) return -1;
    lk_status st;
    lk_tokenizer *t = NULL;
    Py_BEGIN_ALLOW_THREADS st = lk_tokenizer_load((const char *)buf.buf, (size_t)buf.len, &t);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (st) {
        raise_status(st);
        return -1;
    }
    self->t = t;
    return 0;
}

static void Tokenizer_dealloc(TokenizerObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    lk_tokenizer_free(self->t);
    self->t = NULL;
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int tok_ready(TokenizerObject *self) {
    if (!self->t) {
        PyErr_SetString(PyExc_RuntimeError, "Tokenizer is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *ids_to_list(const lk_ids *a) {
    PyObject *l = PyList_New((Py_ssize_t)a->n);
    for (size_t i = 0; l && i < a->n; i++) {
        PyObject *v = PyLong_FromLong(a->v[i]);
        if (!v) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, v);
    }
    return l;
}

static PyObject *Tokenizer_encode(TokenizerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"text", "add_special_tokens", "parse_special", NULL};
    PyObject *text;
    int add_bos = 0, parse_special = 1;
    if (!tok_ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "U|pp", kwlist, &text, &add_bos, &parse_special))
        return NULL;
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(text, &n); /* raises for lone surrogates */
    if (!u) return NULL;
    lk_ids ids = {0};
    lk_status st;
    Py_BEGIN_ALLOW_THREADS st = lk_tok_encode(self->t, u, (size_t)n, parse_special, add_bos, &ids);
    Py_END_ALLOW_THREADS
    PyObject *r = st ? raise_status(st) : ids_to_list(&ids);
    lk_ids_free(&ids);
    return r;
}

static PyObject *Tokenizer_encode_batch(TokenizerObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"texts", "add_special_tokens", "parse_special", NULL};
    PyObject *texts, *seq = NULL, *res = NULL;
    int add_bos = 0, parse_special = 1;
    if (!tok_ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "O|pp", kwlist, &texts, &add_bos, &parse_special))
        return NULL;
    if (PyUnicode_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "encode_batch takes a list of str (use encode for one str)");
        return NULL;
    }
    seq = PySequence_Fast(texts, "texts must be a list of str");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    const char **u = (const char **)PyMem_Calloc((size_t)(n ? n : 1), sizeof(char *));
    Py_ssize_t *lens = (Py_ssize_t *)PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_ssize_t));
    lk_ids *out = (lk_ids *)PyMem_Calloc((size_t)(n ? n : 1), sizeof(lk_ids));
    lk_status *sts = (lk_status *)PyMem_Calloc((size_t)(n ? n : 1), sizeof(lk_status));
    if (!u || !lens || !out || !sts) {
        PyErr_NoMemory();
        goto exit;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(it)) {
            PyErr_Format(PyExc_TypeError, "texts[%zd] must be a str, not %.80s", i, Py_TYPE(it)->tp_name);
            goto exit;
        }
        if (!(u[i] = PyUnicode_AsUTF8AndSize(it, &lens[i]))) goto exit;
    }
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(dynamic, 1)
    for (Py_ssize_t i = 0; i < n; i++) sts[i] = lk_tok_encode(self->t, u[i], (size_t)lens[i], parse_special, add_bos, &out[i]);
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        if (sts[i]) {
            PyErr_Format(PyExc_ValueError, "texts[%zd]: encoding failed", i);
            goto exit;
        }
    res = PyList_New(n);
    for (Py_ssize_t i = 0; res && i < n; i++) {
        PyObject *l = ids_to_list(&out[i]);
        if (!l) {
            Py_CLEAR(res);
            break;
        }
        PyList_SET_ITEM(res, i, l);
    }
exit:
    if (out)
        for (Py_ssize_t i = 0; i < n; i++) lk_ids_free(&out[i]);
    PyMem_Free(u);
    PyMem_Free(lens);
    PyMem_Free(out);
    PyMem_Free(sts);
    Py_XDECREF(seq);
    return res;
}

static int decode_args(TokenizerObject *self, PyObject *args, PyObject *kw, lk_bytes *raw) {
    static char *kwlist[] = {"ids", "skip_special_tokens", NULL};
    PyObject *ids_o;
    int skip = 0;
    if (!tok_ready(self) || !PyArg_ParseTupleAndKeywords(args, kw, "O|p", kwlist, &ids_o, &skip)) return 0;
    Py_ssize_t n = 0;
    int32_t *ids = int_seq(ids_o, &n, "ids");
    if (!ids) return 0;
    lk_status st = lk_tok_decode_bytes(self->t, ids, (size_t)n, skip, raw);
    PyMem_Free(ids);
    if (st) {
        raise_status(st);
        return 0;
    }
    return 1;
}

static PyObject *Tokenizer_decode(TokenizerObject *self, PyObject *args, PyObject *kw) {
    lk_bytes raw = {0}, fixed = {0};
    PyObject *r = NULL;
    if (decode_args(self, args, kw, &raw)) {
        lk_status st = lk_utf8_repair(raw.v, raw.n, &fixed);
        r = st ? raise_status(st) : PyUnicode_DecodeUTF8((const char *)fixed.v, (Py_ssize_t)fixed.n, "strict");
    }
    lk_bytes_free(&raw);
    lk_bytes_free(&fixed);
    return r;
}

static PyObject *Tokenizer_decode_bytes(TokenizerObject *self, PyObject *args, PyObject *kw) {
    lk_bytes raw = {0};
    PyObject *r = NULL;
    if (decode_args(self, args, kw, &raw)) r = PyBytes_FromStringAndSize((const char *)raw.v, (Py_ssize_t)raw.n);
    lk_bytes_free(&raw);
    return r;
}

static PyObject *Tokenizer_token_to_id(TokenizerObject *self, PyObject *args) {
    PyObject *s;
    if (!tok_ready(self) || !PyArg_ParseTuple(args, "U", &s)) return NULL;
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (!u) return NULL;
    int32_t id = lk_tok_lookup(self->t, u, (size_t)n);
    if (id < 0) Py_RETURN_NONE;
    return PyLong_FromLong(id);
}

static PyObject *Tokenizer_id_to_token(TokenizerObject *self, PyObject *args) {
    long long id;
    if (!tok_ready(self) || !PyArg_ParseTuple(args, "L", &id)) return NULL;
    size_t n;
    const char *s = id >= 0 && id <= INT32_MAX ? lk_tok_string(self->t, (int32_t)id, &n) : NULL;
    if (!s) Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "replace");
}

static PyObject *Tokenizer_is_special(TokenizerObject *self, PyObject *args) {
    long long id;
    if (!tok_ready(self) || !PyArg_ParseTuple(args, "L", &id)) return NULL;
    return PyBool_FromLong(id >= 0 && id <= INT32_MAX && lk_tok_is_special(self->t, (int32_t)id));
}

static PyObject *Tokenizer_get_n_ids(TokenizerObject *self, void *Py_UNUSED(c)) {
    return tok_ready(self) ? PyLong_FromLong(lk_tok_n_ids(self->t)) : NULL;
}
static PyObject *Tokenizer_get_bos(TokenizerObject *self, void *Py_UNUSED(c)) {
    if (!tok_ready(self)) return NULL;
    int32_t b = lk_tok_bos(self->t);
    if (b < 0) Py_RETURN_NONE;
    return PyLong_FromLong(b);
}
static PyObject *Tokenizer_get_n_merges(TokenizerObject *self, void *Py_UNUSED(c)) {
    return tok_ready(self) ? PyLong_FromSize_t(lk_tok_n_merges(self->t)) : NULL;
}

static PyObject *mod_pretokenize(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *text;
    if (!PyArg_ParseTuple(args, "U", &text)) return NULL;
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(text, &n);
    if (!u) return NULL;
    lk_ids ends = {0};
    lk_status st = lk_tok_pretokenize(u, (size_t)n, &ends);
    PyObject *res = st ? raise_status(st) : PyList_New((Py_ssize_t)ends.n);
    size_t prev = 0;
    for (size_t i = 0; res && i < ends.n; i++) {
        PyObject *piece = PyUnicode_DecodeUTF8(u + prev, (Py_ssize_t)((size_t)ends.v[i] - prev), "strict");
        if (!piece) {
            Py_CLEAR(res);
            break;
        }
        PyList_SET_ITEM(res, (Py_ssize_t)i, piece);
        prev = (size_t)ends.v[i];
    }
    lk_ids_free(&ends);
    return res;
}

static PyObject *mod_utf8_repair(PyObject *m, PyObject *args) {
    (void)m;
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    lk_bytes out = {0};
    lk_status st = lk_utf8_repair((const uint8_t *)b.buf, (size_t)b.len, &out);
    PyBuffer_Release(&b);
    PyObject *r = st ? raise_status(st) : PyUnicode_DecodeUTF8((const char *)out.v, (Py_ssize_t)out.n, "strict");
    lk_bytes_free(&out);
    return r;
}

static PyMethodDef Tokenizer_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Tokenizer_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(text, add_special_tokens=False, parse_special=True) -> list[int]"},
    {"encode_batch", (PyCFunction)(void (*)(void))Tokenizer_encode_batch, METH_VARARGS | METH_KEYWORDS,
     "encode_batch(texts, add_special_tokens=False, parse_special=True) -> list[list[int]] (threaded)"},
    {"decode", (PyCFunction)(void (*)(void))Tokenizer_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(ids, skip_special_tokens=False) -> str"},
    {"decode_bytes", (PyCFunction)(void (*)(void))Tokenizer_decode_bytes, METH_VARARGS | METH_KEYWORDS,
     "decode_bytes(ids, skip_special_tokens=False) -> bytes (before UTF-8 repair)"},
    {"token_to_id", (PyCFunction)Tokenizer_token_to_id, METH_VARARGS, "token_to_id(str) -> int | None"},
    {"id_to_token", (PyCFunction)Tokenizer_id_to_token, METH_VARARGS, "id_to_token(int) -> str | None"},
    {"is_special", (PyCFunction)Tokenizer_is_special, METH_VARARGS, "is_special(id) -> bool"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tokenizer_getset[] = {
    {"n_ids", (getter)Tokenizer_get_n_ids, NULL, "largest token id + 1", NULL},
    {"bos_id", (getter)Tokenizer_get_bos, NULL, "BOS id from the post-processor template, or None", NULL},
    {"n_merges", (getter)Tokenizer_get_n_merges, NULL, "number of BPE merges", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Tokenizer_slots[] = {
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, (void *)Tokenizer_init},
    {Py_tp_dealloc, (void *)Tokenizer_dealloc},
    {Py_tp_methods, Tokenizer_methods},
    {Py_tp_getset, Tokenizer_getset},
    {Py_tp_doc, "Tokenizer(data: bytes): a byte-level BPE tokenizer from tokenizer.json's text"},
    {0, NULL},
};

static PyType_Spec Tokenizer_spec = {"llama_kernel._C.Tokenizer", sizeof(TokenizerObject), 0, Py_TPFLAGS_DEFAULT,
                                     Tokenizer_slots};


/* ============================================================================
 * Single GPU ops on host arrays (tests and benchmarks)
 * ==========================================================================*/

static PyObject *mod_cuda_matmul(PyObject *m, PyObject *args, PyObject *kw) {
    (void)m;
    static char *kwlist[] = {"x", "qs", "params", "w_bf16", "mode", "variant", "y", "kernel", NULL};
    PyObject *xo, *qo = Py_None, *po = Py_None, *bo = Py_None, *yo = Py_None, *res = NULL;
    int mode = 0, variant = 0, want_kernel = 0;
    const char *kname = "";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OOOiiOp", kwlist, &xo, &qo, &po, &bo, &mode, &variant, &yo,
                                     &want_kernel))
        return NULL;
    PyArrayObject *x = NULL, *qs = NULL, *pr = NULL, *wb = NULL, *y = NULL;
    npy_intp n = 0, k = 0;
    x = (PyArrayObject *)PyArray_FROMANY(xo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    if (!x) goto exit;
    if (qo != Py_None) {
        if (!q4_args(qo, po, &qs, &pr, &n, &k)) goto exit;
    } else {
        wb = (PyArrayObject *)PyArray_FROMANY(bo, NPY_UINT16, 2, 2, NPY_ARRAY_IN_ARRAY);
        if (!wb) goto exit;
        n = PyArray_DIM(wb, 0);
        k = PyArray_DIM(wb, 1);
    }
    if (PyArray_DIM(x, 1) != k) {
        PyErr_Format(PyExc_ValueError, "cuda_matmul: x has %zd columns, W has %zd", (Py_ssize_t)PyArray_DIM(x, 1),
                     (Py_ssize_t)k);
        goto exit;
    }
    if (mode < 0 || mode > 3 || (mode == 2 && n % 2)) {
        PyErr_Format(PyExc_ValueError, "cuda_matmul: mode %d (0 store, 1 add, 2 swiglu with even N, 3 store fp16)", mode);
        goto exit;
    }
    npy_intp M = PyArray_DIM(x, 0), n_out = mode == 2 ? n / 2 : n;
    npy_intp d[2] = {M, n_out};
    if (mode == 1) {
        y = (PyArrayObject *)PyArray_FROMANY(yo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_ENSURECOPY);
        if (!y) goto exit;
        if (PyArray_DIM(y, 0) != M || PyArray_DIM(y, 1) != n_out) {
            PyErr_SetString(PyExc_ValueError, "cuda_matmul: y must be [M, N] for mode 1 (add)");
            goto exit;
        }
    } else {
        y = (PyArrayObject *)PyArray_SimpleNew(2, d, NPY_FLOAT32);
        if (!y) goto exit;
    }
    int used = 0;
    lk_status st;
    Py_BEGIN_ALLOW_THREADS st = lk_cuda_op_matmul(
        (const float *)PyArray_DATA(x), (int)M, (int)k, qs ? (const uint8_t *)PyArray_DATA(qs) : NULL,
        pr ? (const uint16_t *)PyArray_DATA(pr) : NULL, wb ? (const uint16_t *)PyArray_DATA(wb) : NULL, (int)n, mode,
        variant, (float *)PyArray_DATA(y), &used, &kname);
    Py_END_ALLOW_THREADS if (st) {
        raise_status(st);
        goto exit;
    }
    res = want_kernel ? Py_BuildValue("(Ois)", y, used, kname) : Py_BuildValue("(Oi)", y, used);
exit:
    Py_XDECREF(x);
    Py_XDECREF(qs);
    Py_XDECREF(pr);
    Py_XDECREF(wb);
    Py_XDECREF(y);
    return res;
}

static PyObject *mod_cuda_bench_matmul(PyObject *m, PyObject *args) {
    (void)m;
    int M, N, K, mode, variant, bf16 = 0, iters = 50, tune[3] = {0, 0, 0};
    if (!PyArg_ParseTuple(args, "iiiii|pi(iii)", &M, &N, &K, &mode, &variant, &bf16, &iters, &tune[0], &tune[1],
                          &tune[2]))
        return NULL;
    if (M < 1 || N < 2 || K < 128 || iters < 1) {
        PyErr_SetString(PyExc_ValueError, "cuda_bench_matmul: bad shape");
        return NULL;
    }
    /* (rows per warp 0-4 | tiled: warps along K 0-8, chunks in flight 0-8, K splits 0-16) */
    if (tune[0] < 0 || tune[0] > 8 || tune[1] < 0 || tune[1] > 8 || tune[2] < 0 || tune[2] > 16) {
        PyErr_Format(PyExc_ValueError, "cuda_bench_matmul: tune (%d, %d, %d) outside (0-8, 0-8, 0-16)", tune[0],
                     tune[1], tune[2]);
        return NULL;
    }
    double us = 0;
    lk_status st;
    Py_BEGIN_ALLOW_THREADS st = lk_cuda_op_bench_matmul(M, N, K, mode, variant, bf16, iters, tune, &us);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    return PyFloat_FromDouble(us);
}

static PyObject *mod_cuda_attention(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *qo, *ko, *vo, *poso, *res = NULL;
    int n_heads, kind, want_kernel = 0;
    const char *kname = "";
    if (!PyArg_ParseTuple(args, "OOOOii|p", &qo, &ko, &vo, &poso, &n_heads, &kind, &want_kernel)) return NULL;
    PyArrayObject *q = NULL, *k = NULL, *v = NULL, *out = NULL;
    int32_t *pos = NULL;
    Py_ssize_t np_ = 0;
    q = (PyArrayObject *)PyArray_FROMANY(qo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    k = q ? (PyArrayObject *)PyArray_FROMANY(ko, NPY_FLOAT32, 3, 3, NPY_ARRAY_IN_ARRAY) : NULL;
    v = k ? (PyArrayObject *)PyArray_FROMANY(vo, NPY_FLOAT32, 3, 3, NPY_ARRAY_IN_ARRAY) : NULL;
    if (!v) goto exit;
    if (!(pos = int_seq(poso, &np_, "pos"))) goto exit;
    {
        npy_intp M = PyArray_DIM(q, 0), n_kv = PyArray_DIM(k, 0), L = PyArray_DIM(k, 1), hd = PyArray_DIM(k, 2);
        if (np_ != M || PyArray_DIM(q, 1) != n_heads * hd || PyArray_DIM(v, 0) != n_kv || PyArray_DIM(v, 1) != L ||
            PyArray_DIM(v, 2) != hd) {
            PyErr_SetString(PyExc_ValueError, "cuda_attention: shapes q [M, H*hd], k/v [n_kv, L, hd], pos [M]");
            goto exit;
        }
        npy_intp d[2] = {M, n_heads * hd};
        out = (PyArrayObject *)PyArray_SimpleNew(2, d, NPY_FLOAT32);
        if (!out) goto exit;
        lk_status st;
        Py_BEGIN_ALLOW_THREADS st = lk_cuda_op_attention(
            (const float *)PyArray_DATA(q), (int)M, n_heads, (int)n_kv, (int)hd, (const float *)PyArray_DATA(k),
            (const float *)PyArray_DATA(v), (int)L, pos, kind, (float *)PyArray_DATA(out), &kname);
        Py_END_ALLOW_THREADS if (st) {
            Py_CLEAR(out);
            raise_status(st);
        }
    }
    if (!out) goto exit;
    if (want_kernel) {
        res = Py_BuildValue("(Os)", (PyObject *)out, kname ? kname : "");
    } else {
        res = (PyObject *)out;
        out = NULL;
    }
exit:
    Py_XDECREF(q);
    Py_XDECREF(k);
    Py_XDECREF(v);
    Py_XDECREF(out);
    PyMem_Free(pos);
    return res;
}

static PyObject *mod_cuda_bench_attention(PyObject *m, PyObject *args) {
    (void)m;
    int B, H, KV, hd, L, kind, iters = 20;
    if (!PyArg_ParseTuple(args, "iiiiii|i", &B, &H, &KV, &hd, &L, &kind, &iters)) return NULL;
    if (B < 1 || KV < 1 || H % KV || L < 1 || iters < 1) {
        PyErr_SetString(PyExc_ValueError, "cuda_bench_attention: bad shape");
        return NULL;
    }
    double us = 0;
    lk_status st;
    Py_BEGIN_ALLOW_THREADS st = lk_cuda_op_bench_attention(B, H, KV, hd, L, kind, iters, &us);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    return PyFloat_FromDouble(us);
}

static PyObject *mod_cuda_rmsnorm(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *xo, *wo, *res = NULL;
    float eps;
    if (!PyArg_ParseTuple(args, "OOf", &xo, &wo, &eps)) return NULL;
    PyArrayObject *x = (PyArrayObject *)PyArray_FROMANY(xo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    PyArrayObject *w = x ? (PyArrayObject *)PyArray_FROMANY(wo, NPY_FLOAT32, 1, 1, NPY_ARRAY_IN_ARRAY) : NULL;
    PyArrayObject *out = NULL;
    if (!w) goto exit;
    {
        const npy_intp M = PyArray_DIM(x, 0), dim = PyArray_DIM(x, 1);
        if (PyArray_DIM(w, 0) != dim || M < 1 || M > INT32_MAX || dim < 1 || dim > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "cuda_rmsnorm: x must be [M, dim] with M, dim >= 1 and w [dim]; got x [%zd, %zd], w [%zd]",
                         (Py_ssize_t)M, (Py_ssize_t)dim, (Py_ssize_t)PyArray_DIM(w, 0));
            goto exit;
        }
        npy_intp d[2] = {M, dim};
        out = (PyArrayObject *)PyArray_SimpleNew(2, d, NPY_FLOAT32);
        if (!out) goto exit;
        lk_status st;
        Py_BEGIN_ALLOW_THREADS st = lk_cuda_op_rmsnorm((const float *)PyArray_DATA(x), (int)M, (int)dim,
                                                       (const float *)PyArray_DATA(w), eps, (float *)PyArray_DATA(out));
        Py_END_ALLOW_THREADS if (st) {
            Py_CLEAR(out);
            raise_status(st);
        }
    }
    res = (PyObject *)out;
    out = NULL;
exit:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(out);
    return res;
}

static PyObject *mod_cuda_rope_kv(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *qo, *poso, *sloto, *co, *so, *res = NULL;
    int n_heads, n_kv, n_slots;
    if (!PyArg_ParseTuple(args, "OOOiiOOi", &qo, &poso, &sloto, &n_heads, &n_kv, &co, &so, &n_slots)) return NULL;
    PyArrayObject *q = NULL, *c = NULL, *sn = NULL, *qout = NULL, *kc = NULL, *vc = NULL;
    int32_t *pos = NULL, *slot = NULL;
    Py_ssize_t np_ = 0, ns_ = 0;
    q = (PyArrayObject *)PyArray_FROMANY(qo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    c = q ? (PyArrayObject *)PyArray_FROMANY(co, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY) : NULL;
    sn = c ? (PyArrayObject *)PyArray_FROMANY(so, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY) : NULL;
    if (!sn) goto exit;
    if (!(pos = int_seq(poso, &np_, "pos")) || !(slot = int_seq(sloto, &ns_, "slot"))) goto exit;
    {
        const npy_intp M = PyArray_DIM(q, 0), max_seq = PyArray_DIM(c, 0), half_ = PyArray_DIM(c, 1);
        const npy_intp hd = 2 * half_, heads = (npy_intp)n_heads + 2 * (npy_intp)n_kv;
        if (n_kv < 1 || n_heads < 1 || n_heads % n_kv || n_slots < 1 || half_ < 1 || M < 1 || M > INT32_MAX ||
            max_seq > INT32_MAX || hd > INT32_MAX / heads || PyArray_DIM(q, 1) != heads * hd ||
            PyArray_DIM(sn, 0) != max_seq ||
            PyArray_DIM(sn, 1) != half_ || np_ != M || ns_ != M) {
            PyErr_SetString(PyExc_ValueError,
                            "cuda_rope_kv: qkv [M, (n_heads + 2 n_kv) head_dim], pos and slot [M], cos and sin "
                            "[max_seq, head_dim/2], n_heads a multiple of n_kv >= 1, n_slots >= 1");
            goto exit;
        }
        npy_intp dq[2] = {M, PyArray_DIM(q, 1)}, dc[4] = {n_slots, n_kv, max_seq, hd};
        qout = (PyArrayObject *)PyArray_SimpleNew(2, dq, NPY_FLOAT32);
        kc = qout ? (PyArrayObject *)PyArray_SimpleNew(4, dc, NPY_FLOAT32) : NULL;
        vc = kc ? (PyArrayObject *)PyArray_SimpleNew(4, dc, NPY_FLOAT32) : NULL;
        if (!vc) goto exit;
        lk_status st;
        Py_BEGIN_ALLOW_THREADS st = lk_cuda_op_rope_kv(
            (const float *)PyArray_DATA(q), (int)M, n_heads, n_kv, (int)hd, pos, slot, (const float *)PyArray_DATA(c),
            (const float *)PyArray_DATA(sn), (int)max_seq, n_slots, (float *)PyArray_DATA(qout),
            (float *)PyArray_DATA(kc), (float *)PyArray_DATA(vc));
        Py_END_ALLOW_THREADS if (st) {
            raise_status(st);
            goto exit;
        }
        res = Py_BuildValue("(OOO)", qout, kc, vc);
    }
exit:
    Py_XDECREF(q);
    Py_XDECREF(c);
    Py_XDECREF(sn);
    Py_XDECREF(qout);
    Py_XDECREF(kc);
    Py_XDECREF(vc);
    PyMem_Free(pos);
    PyMem_Free(slot);
    return res;
}

static PyObject *mod_cuda_bench_norm_rope(PyObject *m, PyObject *args) {
    (void)m;
    int M, dim, H, KV, hd, iters = 20;
    if (!PyArg_ParseTuple(args, "iiiii|i", &M, &dim, &H, &KV, &hd, &iters)) return NULL;
    double us[3] = {0, 0, 0};
    lk_status st;
    Py_BEGIN_ALLOW_THREADS st = lk_cuda_op_bench_norm_rope(M, dim, H, KV, hd, iters, us);
    Py_END_ALLOW_THREADS if (st) return raise_status(st);
    return Py_BuildValue("(ddd)", us[0], us[1], us[2]);
}

static PyObject *mod_cuda_sample(PyObject *m, PyObject *args, PyObject *kw) {
    (void)m;
    static char *kwlist[] = {"logits", "positions", "temperature", "top_k", "top_p", "repetition_penalty",
                             "seed",   "seq_id0",   "seen",        "paths",              NULL};
    PyObject *lo, *poso, *seen_o = Py_None, *res = NULL;
    int want_paths = 0;
    float temperature = 0.0f, top_p = 1.0f, rep = 1.0f;
    int top_k = 0;
    unsigned long long seed = 0, seq0 = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|fiffKKOp", kwlist, &lo, &poso, &temperature, &top_k, &top_p, &rep,
                                     &seed, &seq0, &seen_o, &want_paths))
        return NULL;
    lk_sampling sp = {temperature, top_k, top_p, rep, seed};
    lk_status st = lk_sampling_validate(&sp);
    if (st) return raise_status(st);
    PyArrayObject *l = (PyArrayObject *)PyArray_FROMANY(lo, NPY_FLOAT32, 2, 2, NPY_ARRAY_IN_ARRAY);
    if (!l) return NULL;
    int32_t *pos = NULL;
    uint32_t *seen = NULL;
    npy_intp B = PyArray_DIM(l, 0), V = PyArray_DIM(l, 1);
    if (!sampler_rows(poso, seen_o, B, V, &pos, &seen)) goto exit;
    {
        npy_intp d[1] = {B};
        PyObject *out = PyArray_SimpleNew(1, d, NPY_INT32);
        PyObject *paths = out && want_paths ? PyArray_SimpleNew(1, d, NPY_INT32) : NULL;
        if (!out || (want_paths && !paths)) {
            Py_XDECREF(out);
            goto exit;
        }
        Py_BEGIN_ALLOW_THREADS st = lk_cuda_op_sample(
            (const float *)PyArray_DATA(l), (int)B, (int)V, pos, temperature, top_k, top_p, rep, seed, seq0, seen,
            (int32_t *)PyArray_DATA((PyArrayObject *)out), paths ? (int32_t *)PyArray_DATA((PyArrayObject *)paths) : NULL);
        Py_END_ALLOW_THREADS if (st) {
            Py_DECREF(out);
            Py_XDECREF(paths);
            raise_status(st);
            goto exit;
        }
        res = paths ? Py_BuildValue("(NN)", out, paths) : out;
    }
exit:
    Py_DECREF(l);
    PyMem_Free(pos);
    PyMem_Free(seen);
    return res;
}

static PyMethodDef module_methods[] = {
    {"estimate", (PyCFunction)(void (*)(void))mod_estimate, METH_VARARGS | METH_KEYWORDS,
     "estimate(config, device='cpu', quantization='int4', max_seq_len=4096, batch_size=1, prefill_chunk=256,\n"
     "         n_threads=0) -> dict of bytes: the memory plan an Engine with these options allocates."},
    {"build_info", mod_build_info, METH_NOARGS, "build_info() -> dict: how this extension was built and what GPU it sees."},
    {"cuda_check", mod_cuda_check, METH_NOARGS, "cuda_check(): raises with the reason and the fix if CUDA is unusable."},
    {"q4_quantize", mod_q4_quantize, METH_VARARGS, "q4_quantize(w float32 [n,k]) -> (qs uint8 [n,k/2], params uint16 [n,k/G,2])"},
    {"q4_dequantize", mod_q4_dequantize, METH_VARARGS, "q4_dequantize(qs, params) -> float32 [n,k]"},
    {"cpu_matmul_q4", mod_cpu_matmul_q4, METH_VARARGS, "cpu_matmul_q4(x [M,k], qs, params, simd=True) -> x W^T"},
    {"sample_cpu", (PyCFunction)(void (*)(void))mod_sample_cpu, METH_VARARGS | METH_KEYWORDS,
     "sample_cpu(logits [B,V], positions, temperature=0, top_k=0, top_p=1, repetition_penalty=1, seed=0,\n"
     "           seq_id0=0, seen=None) -> int32 [B]: the engine's sampling rule on the CPU."},
    {"uniform", mod_uniform, METH_VARARGS, "uniform(seed, seq, pos) -> the sampler's random number"},
    {"safetensors_info", mod_safetensors_info, METH_VARARGS,
     "safetensors_info(path) -> [(name, dtype, shape, nbytes)], after the C reader's validation"},
    {"rope_inv_freq", mod_rope_inv_freq, METH_VARARGS, "rope_inv_freq(config) -> float64 [head_dim/2]"},
    {"cuda_matmul", (PyCFunction)(void (*)(void))mod_cuda_matmul, METH_VARARGS | METH_KEYWORDS,
     "cuda_matmul(x, qs=None, params=None, w_bf16=None, mode=0, variant=0, y=None, kernel=False) -> (y, variant_used)\n"
     "mode 0 store fp32, 1 add into y, 2 SwiGLU, 3 store fp16; variant 0 auto, 1 lut, 2 optimized, 3 batched;\n"
     "kernel=True: (y, variant_used, name of the last kernel launched)"},
    {"cuda_bench_matmul", mod_cuda_bench_matmul, METH_VARARGS,
     "cuda_bench_matmul(M, N, K, mode, variant, bf16=False, iters=50, tune=(0, 0, 0)) -> median microseconds per call\n"
     "tune forces the one-row GEMV configuration (weight rows per warp, chunks in flight, K splits; 0 = auto)"},
    {"cuda_attention", mod_cuda_attention, METH_VARARGS,
     "cuda_attention(q, k, v, pos, n_heads, kind, kernel=False) -> out; kind 0 plain, 1 split-KV decode, 2 flash\n"
     "prefill, 3 warp per (row, head) (packed prefill chunks); kernel=True -> (out, name of the kernel launched last)"},
    {"cuda_bench_attention", mod_cuda_bench_attention, METH_VARARGS,
     "cuda_bench_attention(B, n_heads, n_kv, head_dim, L, kind, iters=20) -> median microseconds (kind as\n"
     "cuda_attention's; 1 and 3: B rows of B slots at position L - 1, 2: a prompt of L rows)"},
    {"cuda_rmsnorm", mod_cuda_rmsnorm, METH_VARARGS,
     "cuda_rmsnorm(x [M, dim], w [dim], eps) -> float32 [M, dim]: the engine's RMSNorm kernel (fp16 outputs)"},
    {"cuda_rope_kv", mod_cuda_rope_kv, METH_VARARGS,
     "cuda_rope_kv(qkv [M, (H + 2 KV) hd], pos, slot, n_heads, n_kv, cos [S, hd/2], sin [S, hd/2], n_slots)\n"
     "-> (qkv_out, k_cache, v_cache): the engine's rotary + KV-append kernel (caches [n_slots, KV, S, hd])"},
    {"cuda_bench_norm_rope", mod_cuda_bench_norm_rope, METH_VARARGS,
     "cuda_bench_norm_rope(M, dim, n_heads, n_kv, head_dim, iters=20) -> (rmsnorm_us, rope_kv_us, copy_us)\n"
     "median microseconds over M prefill rows; copy_us: a device copy moving the RMSNorm's bytes (6 M dim)"},
    {"cuda_sample", (PyCFunction)(void (*)(void))mod_cuda_sample, METH_VARARGS | METH_KEYWORDS,
     "cuda_sample(logits, positions, ...) -> int32 [B]: the GPU sampler (same arguments as sample_cpu); with\n"
     "paths=True -> (tokens, paths): the path each row took (0 greedy, 1 split: top-k, top-p alone or temperature\n"
     "alone from the row's blocks, 2 top-k window, 3 top-k list from the vocabulary, 4 draw over the vocabulary)"},
    {"pretokenize", mod_pretokenize, METH_VARARGS, "pretokenize(text) -> list[str]: the Llama 3 pre-tokenizer's pieces"},
    {"utf8_repair", mod_utf8_repair, METH_VARARGS, "utf8_repair(bytes) -> str with U+FFFD per ill-formed maximal subpart"},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *m) {
    if (PyArray_ImportNumPyAPI() < 0) return -1;
    PyObject *t = PyType_FromModuleAndSpec(m, &Engine_spec, NULL);
    if (!t) return -1;
    if (PyModule_AddObjectRef(m, "Engine", t) < 0) {
        Py_DECREF(t);
        return -1;
    }
    Py_DECREF(t);
    t = PyType_FromModuleAndSpec(m, &Tokenizer_spec, NULL);
    if (!t) return -1;
    if (PyModule_AddObjectRef(m, "Tokenizer", t) < 0) {
        Py_DECREF(t);
        return -1;
    }
    Py_DECREF(t);
    if (PyModule_AddIntConstant(m, "Q4_GROUP", LK_Q4_GROUP) < 0 ||
        PyModule_AddIntConstant(m, "Q4_VERSION", LK_Q4_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "MAX_SEQ_LEN", LK_MAX_SEQ_LEN) < 0 ||
        PyModule_AddIntConstant(m, "ROPE_DEFAULT", LK_ROPE_DEFAULT) < 0 ||
        PyModule_AddIntConstant(m, "ROPE_LINEAR", LK_ROPE_LINEAR) < 0 ||
        PyModule_AddIntConstant(m, "ROPE_LLAMA3", LK_ROPE_LLAMA3) < 0 ||
        PyModule_AddIntConstant(m, "LOGIT_ROWS_MIN", 8) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "llama_kernel._C", "llama_kernel's C/CUDA engine (see llama_kernel for the API).", 0,
    module_methods,        module_slots,      NULL,                                                          NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__C(void) { return PyModuleDef_Init(&module_def); }
