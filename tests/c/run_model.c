/* A generic user of a library built by `nnc build`: compiled with -DMODEL=<name> and
 * -include <name>.h, it learns every shape from the library's own functions.
 *
 *   run_model IN.bin BATCH OUT.bin
 *
 * IN.bin holds the inputs in declaration order, each `batch * size` little-endian
 * 4-byte values (float32 or int32, row-major); OUT.bin receives the outputs the same
 * way. `--info` prints `max_batch N`, then a line per input and output: kind, name,
 * dtype (0 float32, 1 int32), values per sample, id bound (-1: none), the sample's dims.
 * The exit code is the return code of <name>_run (0 on success), or 100 for a
 * usage or file error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define F(x) CAT(MODEL, x)

static int info(void) {
    int64_t dims[64];
    int rank;
    printf("max_batch %lld\n", (long long)F(_max_batch)());
    for (int i = 0; i < F(_num_inputs)(); i++) {
        F(_input_shape)(i, dims, &rank);
        printf("input %s %d %lld %lld", F(_input_name)(i), F(_input_dtype)(i), (long long)F(_input_size)(i),
               (long long)F(_input_bound)(i));
        for (int k = 0; k < rank; k++) printf(" %lld", (long long)dims[k]);
        printf("\n");
    }
    for (int i = 0; i < F(_num_outputs)(); i++) {
        F(_output_shape)(i, dims, &rank);
        printf("output %s %d %lld -1", F(_output_name)(i), F(_output_dtype)(i), (long long)F(_output_size)(i));
        for (int k = 0; k < rank; k++) printf(" %lld", (long long)dims[k]);
        printf("\n");
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--info") == 0) return info();
    if (argc != 4) {
        fprintf(stderr, "usage: %s IN.bin BATCH OUT.bin | --info\n", argv[0]);
        return 100;
    }
    int64_t batch = atoll(argv[2]);
    int64_t rows = batch > 0 ? batch : 0;
    int ni = F(_num_inputs)(), no = F(_num_outputs)();
    void *ins[64], *outs[64];
    if (ni > 64 || no > 64) return 100;
    FILE *in = fopen(argv[1], "rb");
    if (!in) {
        perror(argv[1]);
        return 100;
    }
    for (int i = 0; i < ni; i++) {
        size_t n = (size_t)(rows * F(_input_size)(i));
        ins[i] = calloc(n + 1, 4);
        if (!ins[i] || fread(ins[i], 4, n, in) != n) {
            fprintf(stderr, "%s: too short for input %s\n", argv[1], F(_input_name)(i));
            return 100;
        }
    }
    fclose(in);
    for (int i = 0; i < no; i++) {
        outs[i] = calloc((size_t)(rows * F(_output_size)(i)) + 1, 4);
        if (!outs[i]) return 100;
    }
    int code = F(_run_v)((const void *const *)ins, batch, outs);
    if (code != 0) {
        fprintf(stderr, "error %d: %s\n", code, F(_strerror)(code));
        return code;
    }
    FILE *out = fopen(argv[3], "wb");
    if (!out) {
        perror(argv[3]);
        return 100;
    }
    for (int i = 0; i < no; i++) {
        size_t n = (size_t)(rows * F(_output_size)(i));
        if (fwrite(outs[i], 4, n, out) != n) return 100;
    }
    fclose(out);
    return 0;
}
