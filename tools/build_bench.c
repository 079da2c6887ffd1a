/* Times a library built by `nnc build`: compile with -DMODEL=<name> -include <name>.h
 * and link against lib<name>.so or lib<name>.a (tools/build_bench.sh does).
 *
 *   build_bench BATCH SECONDS
 *
 * Calls <name>_run_v on BATCH rows of fixed pseudo-random inputs (after 20 warm-up calls)
 * until SECONDS have passed, in rounds of calls; prints the median time of a call over the
 * rounds and the rows per second it gives. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define F(x) CAT(MODEL, x)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s BATCH SECONDS\n", argv[0]);
        return 2;
    }
    int64_t batch = atoll(argv[1]);
    double seconds = atof(argv[2]);
    int ni = F(_num_inputs)(), no = F(_num_outputs)();
    void *ins[64], *outs[64];
    uint64_t x = 42;
    for (int i = 0; i < ni; i++) {
        int64_t n = batch * F(_input_size)(i);
        int64_t bound = F(_input_bound)(i);
        ins[i] = malloc((size_t)n * 4 + 4);
        for (int64_t k = 0; k < n; k++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            double u = (double)(x >> 11) / 9007199254740992.0;
            if (F(_input_dtype)(i) == 1)
                ((int32_t *)ins[i])[k] = (int32_t)(u * (bound > 0 ? bound : 4));
            else
                ((float *)ins[i])[k] = (float)(2 * u - 1);
        }
    }
    for (int i = 0; i < no; i++) outs[i] = malloc((size_t)(batch * F(_output_size)(i)) * 4 + 4);
    for (int i = 0; i < 20; i++) {
        int code = F(_run_v)((const void *const *)ins, batch, outs);
        if (code) {
            fprintf(stderr, "error %d: %s\n", code, F(_strerror)(code));
            return 1;
        }
    }
    /* Rounds of calls lasting about 10 ms each. */
    double t0 = now();
    int per = 1;
    while (1) {
        double a = now();
        for (int i = 0; i < per; i++) F(_run_v)((const void *const *)ins, batch, outs);
        if (now() - a > 0.01 || per > 1000000) break;
        per *= 2;
    }
    double times[4096];
    int rounds = 0;
    t0 = now();
    while (rounds < 4096 && (now() - t0 < seconds || rounds < 5)) {
        double a = now();
        for (int i = 0; i < per; i++) F(_run_v)((const void *const *)ins, batch, outs);
        times[rounds++] = (now() - a) / per;
    }
    qsort(times, rounds, sizeof times[0], cmp);
    double med = times[rounds / 2];
    printf("batch %lld: %.2f us per call (median of %d rounds of %d), %.0f rows/s\n", (long long)batch, med * 1e6,
           rounds, per, batch / med);
    return 0;
}
