/* adam_c_api.c: the library's version and the initialisers of the growing public structs (see adam_c.h). */
#include "adam_c.h"

const char *adamc_version(void) { return ADAMC_VERSION_STRING; }

void adamc_hparams_init(adamc_hparams *hp)
{
    if (hp) {
        const adamc_hparams defaults = ADAMC_HPARAMS_INIT;
        *hp = defaults;
    }
}

void adamc_tensor_init(adamc_tensor *t)
{
    if (t) {
        const adamc_tensor empty = ADAMC_TENSOR_INIT;
        *t = empty;
    }
}

void adamc_step_options_init(adamc_step_options *opts)
{
    if (opts) {
        const adamc_step_options defaults = ADAMC_STEP_OPTIONS_INIT;
        *opts = defaults;
    }
}
