/* layout.h — parameters live in one allocation (and their gradients in a
 * second one of the same layout), carved into named tensors. Modules declare
 * their tensors through moe_layout_add(); the model calls every module's
 * layout function twice: once to count (pointers come back NULL), then to
 * hand out pointers into the allocations. The tensor table also drives
 * initialisation, weight decay and the safetensors names.
 *
 * A tensor declared with moe_layout_add_split (the routed experts) is
 * divided along dimension 0 among `parts` processes (expert parallel,
 * docs/DISTRIBUTED.md): the allocation holds only this process's rows
 * of dimension 0 (elements [first, first + size) of the whole tensor);
 * shape stays the whole tensor's, as the checkpoint
 * stores it. With parts = 1 every tensor is whole. */
#ifndef MOE_LAYOUT_H
#define MOE_LAYOUT_H

#include "moe/util/common.h"

#define MOE_NAME_MAX 96

typedef struct moe_tensor {
    char name[MOE_NAME_MAX];   /* Hugging-Face-style, e.g. "model.layers.0.mlp.up_proj.weight" */
    int ndim;
    int64_t shape[3];
    size_t offset;             /* in floats, from the start of the allocation */
    size_t size;               /* floats held here */
    size_t full;               /* floats of the whole tensor (size unless split) */
    int split;                 /* divided along dimension 0 among the layout's parts */
    size_t first;              /* element of the whole tensor where the part held
                                * here begins (0 unless split) */
    float init_std;            /* normal(0, init_std); 0 < init_std. ones if init_std < 0 */
    int decay;                 /* AdamW weight decay applies (matrices only) */
} moe_tensor;

typedef struct moe_layout {
    moe_tensor *tensors;
    size_t count, cap;
    size_t total;              /* floats so far */
    float *params, *grads;     /* NULL while counting */
    int failed;                /* an allocation of the table failed */
    int part, parts;           /* split tensors: this process holds part `part` of
                                * `parts` (0 of 1, or 0 of 0 in a zeroed layout:
                                * everything) */
} moe_layout;

/* Declares a tensor of the given shape (ndim 1..3). Returns the parameter
 * pointer and sets *grad (both NULL while counting). A 1-D tensor is
 * initialised to ones and never decayed; others use normal(0, init_std). */
float *moe_layout_add(moe_layout *L, float **grad, float init_std, int ndim,
                      const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* The same for a tensor divided along dimension 0 among the layout's parts
 * (shape[0] must be a multiple of parts). The pointers address the rows
 * held: part `part` of the rows, elements [first, first + size). */
float *moe_layout_add_split(moe_layout *L, float **grad, float init_std, int ndim,
                            const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* The elements of [first, first + count) that lie in [lo, hi): [*a, *b);
 * 0 when there are none (a slice of parameters against a tensor or a run). */
static inline int moe_span_clip(size_t first, size_t count, size_t lo, size_t hi, size_t *a, size_t *b) {
    *a = first > lo ? first : lo;
    *b = first + count < hi ? first + count : hi;
    return *a < *b;
}

/* Starts the second pass: keeps the table size, restarts offsets. */
void moe_layout_rewind(moe_layout *L, float *params, float *grads);
void moe_layout_free(moe_layout *L);
const moe_tensor *moe_layout_find(const moe_layout *L, const char *name);

#endif
