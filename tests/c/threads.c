/* Calls a library built by `nnc build` from several threads at once (compile with
 * -DMODEL=<name> -include <name>.h, link with -lpthread):
 *
 *   threads IN.bin BATCH THREADS CALLS
 *
 * Runs BATCH rows of IN.bin (as run_model.c reads it), and their first BATCH/2 rows, once
 * on the main thread, then CALLS times on each of THREADS threads, every thread on its own
 * output buffers, with every other call at the smaller batch; each result must equal the
 * main thread's at the same batch bit for bit. (Results at two batch sizes may differ in
 * the last bits: the matrix products of two batch sizes may be blocked differently.) Exit 0 when all do, 1 when one differs, 100 on a usage or
 * file error. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define F(x) CAT(MODEL, x)

static int64_t batch;
static int calls;
static void *ins[64], *ref[64], *half[64];

static void *worker(void *arg) {
    (void)arg;
    int no = F(_num_outputs)();
    void *outs[64];
    for (int i = 0; i < no; i++) outs[i] = calloc((size_t)(batch * F(_output_size)(i)) + 1, 4);
    intptr_t bad = 0;
    for (int c = 0; c < calls && !bad; c++) {
        int small = c % 2 && batch > 1;
        int64_t b = small ? batch / 2 : batch;
        if (F(_run_v)((const void *const *)ins, b, outs) != 0) bad = 1;
        for (int i = 0; i < no && !bad; i++)
            if (memcmp(outs[i], small ? half[i] : ref[i], (size_t)(b * F(_output_size)(i)) * 4) != 0) bad = 1;
    }
    for (int i = 0; i < no; i++) free(outs[i]);
    return (void *)bad;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s IN.bin BATCH THREADS CALLS\n", argv[0]);
        return 100;
    }
    batch = atoll(argv[2]);
    int nt = atoi(argv[3]);
    calls = atoi(argv[4]);
    int ni = F(_num_inputs)(), no = F(_num_outputs)();
    if (batch < 1 || nt < 1 || nt > 64 || ni > 64 || no > 64) return 100;
    FILE *in = fopen(argv[1], "rb");
    if (!in) return 100;
    for (int i = 0; i < ni; i++) {
        size_t n = (size_t)(batch * F(_input_size)(i));
        ins[i] = calloc(n + 1, 4);
        if (fread(ins[i], 4, n, in) != n) return 100;
    }
    fclose(in);
    for (int i = 0; i < no; i++) {
        ref[i] = calloc((size_t)(batch * F(_output_size)(i)) + 1, 4);
        half[i] = calloc((size_t)(batch * F(_output_size)(i)) + 1, 4);
    }
    if (F(_run_v)((const void *const *)ins, batch, ref) != 0) return 100;
    if (batch > 1 && F(_run_v)((const void *const *)ins, batch / 2, half) != 0) return 100;
    pthread_t t[64];
    for (int k = 0; k < nt; k++) pthread_create(&t[k], NULL, worker, NULL);
    int bad = 0;
    for (int k = 0; k < nt; k++) {
        void *r;
        pthread_join(t[k], &r);
        if (r) bad = 1;
    }
    if (bad) fprintf(stderr, "a thread's result differs from the main thread's\n");
    return bad;
}
