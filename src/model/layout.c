/* layout.c — the tensor table that carves parameters and gradients out of
 * two allocations (see layout.h for the two-pass protocol). */
#include "moe/model/layout.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Both kinds of tensor: a split one holds part L->part of its rows here. */
static float *layout_add(moe_layout *L, float **grad, float init_std, int ndim, const int64_t *shape,
                         int split, const char *fmt, va_list ap) {
    int parts = split && L->parts > 1 ? L->parts : 1;
    assert(ndim >= 1 && ndim <= 3);
    size_t full = 1;
    for (int i = 0; i < ndim; i++) {
        assert(shape[i] >= 0);
        full *= (size_t)shape[i];
    }
    size_t size = full / (size_t)parts;
    if (!L->params) {  /* counting pass: record the tensor */
        if (L->count == L->cap) {
            size_t cap = L->cap ? 2 * L->cap : 64;
            moe_tensor *t = realloc(L->tensors, cap * sizeof *t);
            if (!t) { L->failed = 1; if (grad) *grad = NULL; return NULL; }
            L->tensors = t;
            L->cap = cap;
        }
        moe_tensor *t = &L->tensors[L->count++];
        memset(t, 0, sizeof *t);
        vsnprintf(t->name, sizeof t->name, fmt, ap);
        t->ndim = ndim;
        for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
        t->offset = L->total;
        t->size = size;
        t->full = full;
        t->split = parts > 1;
        t->first = (size_t)(parts > 1 ? L->part : 0) * size;
        t->init_std = ndim == 1 ? -1.0f : init_std;
        t->decay = ndim > 1;
        L->total += size;
        if (grad) *grad = NULL;
        return NULL;
    }
    /* assigning pass: same order, same offsets, so inside the allocation the
     * counting pass sized (its last tensor ends it); a split the parts do
     * not divide was refused after the counting pass (moe_model_create_part) */
    size_t off = L->total;
    L->total += size;
    assert(L->count > 0 && L->total <= L->tensors[L->count - 1].offset + L->tensors[L->count - 1].size);
    assert(shape[0] % parts == 0);
    if (grad) *grad = L->grads ? L->grads + off : NULL;
    return L->params + off;
}

float *moe_layout_add(moe_layout *L, float **grad, float init_std, int ndim,
                      const int64_t *shape, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    float *p = layout_add(L, grad, init_std, ndim, shape, 0, fmt, ap);
    va_end(ap);
    return p;
}

float *moe_layout_add_split(moe_layout *L, float **grad, float init_std, int ndim,
                            const int64_t *shape, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    float *p = layout_add(L, grad, init_std, ndim, shape, 1, fmt, ap);
    va_end(ap);
    return p;
}

void moe_layout_rewind(moe_layout *L, float *params, float *grads) {
    L->params = params;
    L->grads = grads;
    L->total = 0;
}

void moe_layout_free(moe_layout *L) {
    free(L->tensors);
    memset(L, 0, sizeof *L);
}

const moe_tensor *moe_layout_find(const moe_layout *L, const char *name) {
    for (size_t i = 0; i < L->count; i++)
        if (!strcmp(L->tensors[i].name, name)) return &L->tensors[i];
    return NULL;
}
