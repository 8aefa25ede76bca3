/* quickstart.c: adam_c from C in one file: 100 Adam steps on f(p) = sum((p - 3)^2) / 2, then the params printed.
 * Build it against an installed adam_c (see CMakeLists.txt beside it, or pkg-config / adam_c-config):
 *   cc quickstart.c $(pkg-config --cflags --libs adam_c) -Wl,-rpath,"$(pkg-config --variable=libdir adam_c)"
 *   cc quickstart.c $(pkg-config --cflags --libs adam_c_static)            (static: libadam_c.a, no rpath)
 *   cc quickstart.c $(adam_c-config --cflags --libs --rpath)               (against the pip-installed adam_c)
 * Exits 0 when every param has reached 3 (to within 0.05), 1 otherwise. */
#include <adam_c.h>

#include <stdint.h>
#include <stdio.h>

#define N 4
#define STEPS 100

int main(void)
{
    float p[N] = {0.0f, 1.0f, -2.0f, 5.0f}; /* the params, where they start */
    float g[N];                             /* their gradient, computed before every step */
    float m[N] = {0}, v[N] = {0};           /* Adam's state (exp_avg, exp_avg_sq): zero before the first step */

    adamc_hparams hp;
    adamc_hparams_init(&hp); /* torch.optim.Adam's defaults (and struct_size); then set what you need */
    hp.lr = 0.1;

    for (int64_t t = 1; t <= STEPS; t++) { /* t: the step number, from 1 (the bias corrections use it) */
        for (int i = 0; i < N; i++)
            g[i] = p[i] - 3.0f; /* d/dp of (p - 3)^2 / 2 */
        adamc_status s = adamc_step_f32(p, g, m, v, NULL /* no AMSGrad max */, N, t, &hp);
        if (s != ADAMC_OK) {
            fprintf(stderr, "adam_c %s: step %lld: %s\n", adamc_version(), (long long)t, adamc_status_message(s));
            return 1;
        }
    }

    printf("adam_c %s (%s kernels): %d steps of Adam(lr=%g) on sum((p - 3)^2) / 2\n", adamc_version(),
           adamc_current_target(), STEPS, hp.lr);
    int converged = 1;
    for (int i = 0; i < N; i++) {
        printf("p[%d] = %.9g\n", i, (double)p[i]); /* %.9g: every float32 exactly (check_demo.py compares them) */
        if (p[i] < 2.95f || p[i] > 3.05f)
            converged = 0;
    }
    printf("%s\n", converged ? "all params reached 3" : "not converged");
    return converged ? 0 : 1;
}
