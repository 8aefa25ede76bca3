/* validate.c: what a step refuses: status messages, the checks of a tensor table's entries and of step options. */
#include "adam_c.h"
#include "adam_internal.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

const char *adamc_status_message(adamc_status status)
{
    switch (status) {
    case ADAMC_OK: return "ok";
    case ADAMC_ERR_NULL_POINTER: return "a buffer pointer is NULL";
    case ADAMC_ERR_MISALIGNED: return "a buffer is not aligned to its element size";
    case ADAMC_ERR_OVERLAP: return "buffers of one update overlap in memory";
    case ADAMC_ERR_HYPERPARAMETER: return "invalid hyperparameter or step";
    case ADAMC_ERR_DTYPE: return "unsupported dtype";
    case ADAMC_ERR_UNKNOWN_TARGET: return "unknown or unsupported SIMD target";
    case ADAMC_ERR_NO_MEMORY: return "out of memory";
    case ADAMC_ERR_STRUCT_SIZE: return "struct_size of adamc_hparams/adamc_tensor is not this library's (use *_init)";
    case ADAMC_ERR_CALLBACK: return "the shards' reduce_sumsq callback failed (nothing was written)";
    case ADAMC_ERR_OPTION: return "invalid step option (grad_scale, max_grad_norm, ema_decay, rounding or master)";
    }
    return "unknown status";
}

static adamc_status check_hparams(const adamc_hparams *hp, int64_t step)
{
    if (!hp)
        return ADAMC_ERR_NULL_POINTER;
    if (hp->struct_size != sizeof(adamc_hparams)) /* the only layout so far; see adam_c.h on growing structs */
        return ADAMC_ERR_STRUCT_SIZE;
    /* written so that NaN fails every test, as torch's `not 0.0 <= lr` does */
    if (!(hp->lr >= 0.0) || !(hp->eps >= 0.0) || !(hp->weight_decay >= 0.0))
        return ADAMC_ERR_HYPERPARAMETER;
    if (!(hp->beta1 >= 0.0 && hp->beta1 < 1.0) || !(hp->beta2 >= 0.0 && hp->beta2 < 1.0))
        return ADAMC_ERR_HYPERPARAMETER;
    if (step < 1)
        return ADAMC_ERR_HYPERPARAMETER;
    return ADAMC_OK;
}


/* Copies entry i of a caller's table (whose entries are struct_size bytes apart) into *out, with the fields its
 * layout lacks set to their defaults. */
adamc_status adamc_read_entry(const adamc_tensor *tensors, size_t i, size_t stride, adamc_tensor *out)
{
    const unsigned char *src = (const unsigned char *)tensors + i * stride;
    size_t size;
    memcpy(&size, src, sizeof size);
    if (size != stride)
        return ADAMC_ERR_STRUCT_SIZE;
    adamc_tensor_init(out);
    memcpy(out, src, stride == sizeof(adamc_tensor) ? sizeof(adamc_tensor) : TENSOR_V1_FIELDS);
    out->struct_size = sizeof(adamc_tensor);
    return ADAMC_OK;
}

adamc_status adamc_check_tensor(const adamc_tensor *t)
{
    if (t->struct_size != sizeof(adamc_tensor))
        return ADAMC_ERR_STRUCT_SIZE;
    if (t->dtype < ADAMC_FLOAT32 || t->dtype > ADAMC_BFLOAT16)
        return ADAMC_ERR_DTYPE;
    if (t->grad_float32 != 0 && !(t->grad_float32 == 1 && is_low_precision(t->dtype)))
        return ADAMC_ERR_DTYPE;
    const int gtype = grad_type_of(t);
    if (t->rounding != ADAMC_ROUND_NEAREST && t->rounding != ADAMC_ROUND_STOCHASTIC)
        return ADAMC_ERR_OPTION;
    if (t->rounding == ADAMC_ROUND_STOCHASTIC && (t->dtype != ADAMC_BFLOAT16 || t->master))
        return ADAMC_ERR_OPTION;
    if (t->master && !is_low_precision(t->dtype))
        return ADAMC_ERR_OPTION;
    if (t->state_dtype < ADAMC_STATE_COMPUTE || t->state_dtype > ADAMC_STATE_INT8)
        return ADAMC_ERR_DTYPE;
    if (t->state_dtype != ADAMC_STATE_COMPUTE && t->dtype == ADAMC_FLOAT64)
        return ADAMC_ERR_DTYPE; /* compressed state decodes to float32 */
    if (t->state_rounding != ADAMC_ROUND_NEAREST &&
        !(t->state_rounding == ADAMC_ROUND_STOCHASTIC && t->state_dtype == ADAMC_STATE_BFLOAT16))
        return ADAMC_ERR_OPTION;
    adamc_status s = check_hparams(t->hp, t->step);
    if (s != ADAMC_OK || t->n == 0)
        return s;
    const int ams = t->hp->amsgrad != 0;
    const size_t ssize = state_size(t);
    const void *bufs[10] = {t->param, t->grad, t->exp_avg, t->exp_avg_sq, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t sizes[10] = {element_size(t), dtype_size(gtype), ssize, ssize, 0, 0, 0, 0, 0, 0};
    size_t counts[10] = {t->n, t->n, t->n, t->n, t->n, t->n, t->n, t->n, t->n, t->n}; /* elements per buffer */
    int nbufs = 4;
    if (ams) {
        bufs[nbufs] = t->max_exp_avg_sq;
        sizes[nbufs++] = ssize;
    }
    if (t->state_dtype == ADAMC_STATE_INT8) { /* the block scales: ceil(n / 256) floats each */
        const size_t blocks = t->n / ADAMC_STATE_BLOCK + (t->n % ADAMC_STATE_BLOCK != 0);
        float *const scales[3] = {t->exp_avg_absmax, t->exp_avg_sq_absmax, t->max_exp_avg_sq_absmax};
        for (int s = 0; s < (ams ? 3 : 2); s++) {
            bufs[nbufs] = scales[s];
            counts[nbufs] = blocks;
            sizes[nbufs++] = sizeof(float);
        }
    }
    if (t->master) {
        bufs[nbufs] = t->master;
        sizes[nbufs++] = sizeof(float);
    }
    if (t->ema) {
        bufs[nbufs] = t->ema;
        sizes[nbufs++] = compute_size(t);
    }
    size_t largest = 0;
    for (int i = 0; i < nbufs; i++)
        largest = sizes[i] > largest ? sizes[i] : largest;
    if (t->n > SIZE_MAX / largest)
        return ADAMC_ERR_OVERLAP; /* no real buffer is that large */
    for (int i = 0; i < nbufs; i++) {
        if (!bufs[i])
            return ADAMC_ERR_NULL_POINTER;
        if ((uintptr_t)bufs[i] % sizes[i])
            return ADAMC_ERR_MISALIGNED;
    }
    for (int i = 0; i < nbufs; i++)
        for (int j = i + 1; j < nbufs; j++) {
            const uintptr_t x = (uintptr_t)bufs[i], y = (uintptr_t)bufs[j];
            /* by distance, not by end address: an end address can wrap for absurd n and hide an overlap */
            if (x <= y ? y - x < counts[i] * sizes[i] : x - y < counts[j] * sizes[j])
                return ADAMC_ERR_OVERLAP;
        }
    return ADAMC_OK;
}

adamc_status adamc_check_options(const adamc_step_options *o)
{
    if (o->struct_size != sizeof(adamc_step_options))
        return ADAMC_ERR_STRUCT_SIZE;
    /* the kernel divides by float32(grad_scale): it must be a float32 > 0 and finite too */
    if (!(o->grad_scale > 0.0) || !isfinite(o->grad_scale) || !((float)o->grad_scale > 0.0f) ||
        !isfinite((float)o->grad_scale))
        return ADAMC_ERR_OPTION;
    if (!(o->max_grad_norm >= 0.0)) /* NaN fails too; +inf is allowed (never clips) */
        return ADAMC_ERR_OPTION;
    if (!(o->ema_decay >= 0.0 && o->ema_decay <= 1.0))
        return ADAMC_ERR_OPTION;
    return ADAMC_OK;
}
