/* demo.c: a consumer of the installed adam_c: N steps of a fixed mixed-dtype, two-group problem, params printed
 * exactly (%a) for check_demo.py to compare bit for bit with adam_c.Adam. Written in the common subset of C and
 * C++ so the pkg-config consumer compiles this same file as C++. Usage: demo STEPS */
#include <adam_c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_TENSORS 3
static const size_t SIZES[N_TENSORS] = {37, 11, 5};
static const int DTYPES[N_TENSORS] = {ADAMC_FLOAT32, ADAMC_FLOAT64, ADAMC_FLOAT32};
static const int GROUP_OF[N_TENSORS] = {0, 0, 1};

/* exactly representable, so C and NumPy produce the same bits: see check_demo.py */
static double initial_param(int k, size_t i) { return ((double)(i % 5) - 2.0) * 0.25 + k * 0.125; }
static double grad_value(int k, size_t i, long t) { return (double)((long)(i * 7 + k * 3) % 17 + t * 13 % 17 - 16) / 8.0; }

static void set(void *buf, int dtype, size_t i, double x)
{
    if (dtype == ADAMC_FLOAT32)
        ((float *)buf)[i] = (float)x;
    else
        ((double *)buf)[i] = x;
}

int main(int argc, char **argv)
{
    const long steps = argc > 1 ? atol(argv[1]) : 0;
    if (steps < 1) {
        fprintf(stderr, "usage: demo STEPS (>= 1)\n");
        return 2;
    }
    if (strcmp(adamc_version(), ADAMC_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s but library %s\n", ADAMC_VERSION_STRING, adamc_version());
        return 1;
    }
    /* group 0: Adam with L2 decay and AMSGrad; group 1: AdamW, maximize */
    adamc_hparams hp[2];
    adamc_hparams_init(&hp[0]);
    hp[0].lr = 1e-2;
    hp[0].weight_decay = 0.01;
    hp[0].amsgrad = 1;
    adamc_hparams_init(&hp[1]);
    hp[1].lr = 3e-3;
    hp[1].beta1 = 0.8;
    hp[1].weight_decay = 0.1;
    hp[1].decoupled_weight_decay = 1;
    hp[1].maximize = 1;

    adamc_tensor table[N_TENSORS];
    void *bufs[N_TENSORS][5];
    for (int k = 0; k < N_TENSORS; k++) {
        const size_t es = DTYPES[k] == ADAMC_FLOAT32 ? sizeof(float) : sizeof(double);
        for (int b = 0; b < 5; b++)
            bufs[k][b] = calloc(SIZES[k], es); /* zeros: the optimizer's initial state */
        for (size_t i = 0; i < SIZES[k]; i++)
            set(bufs[k][0], DTYPES[k], i, initial_param(k, i));
        adamc_tensor_init(&table[k]);
        table[k].param = bufs[k][0];
        table[k].grad = bufs[k][1];
        table[k].exp_avg = bufs[k][2];
        table[k].exp_avg_sq = bufs[k][3];
        table[k].max_exp_avg_sq = bufs[k][4];
        table[k].n = SIZES[k];
        table[k].dtype = DTYPES[k];
        table[k].hp = &hp[GROUP_OF[k]];
    }
    for (long t = 1; t <= steps; t++) {
        for (int k = 0; k < N_TENSORS; k++) {
            for (size_t i = 0; i < SIZES[k]; i++)
                set(bufs[k][1], DTYPES[k], i, grad_value(k, i, t));
            table[k].step = t;
        }
        const adamc_status s = adamc_step_multi(table, N_TENSORS);
        if (s != ADAMC_OK) {
            fprintf(stderr, "step %ld: %s\n", t, adamc_status_message(s));
            return 1;
        }
    }
    printf("version %s\n", adamc_version());
    for (int k = 0; k < N_TENSORS; k++) {
        printf("p%d", k);
        for (size_t i = 0; i < SIZES[k]; i++) {
            if (DTYPES[k] == ADAMC_FLOAT32)
                printf(" %a", (double)((float *)bufs[k][0])[i]);
            else
                printf(" %a", ((double *)bufs[k][0])[i]);
        }
        printf("\n");
        for (int b = 0; b < 5; b++)
            free(bufs[k][b]);
    }
    return 0;
}
