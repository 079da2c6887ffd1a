//! The C side of a built library: the header (`<name>.h`, the documented API) and the
//! small C file of per-model functions (`api.c`: the shape tables, and `<name>_run`,
//! which loads the embedded blob once and calls the runtime's `nnc_rt_run`).

use super::blob::Io;

/// What the C files say about one input or output.
pub struct Port {
    pub name: String,
    pub io: Io,
    /// Dims of one sample (the batch dim left out).
    pub sample: Vec<usize>,
}

/// What the C files say about the model.
pub struct Api {
    /// The C prefix: the model's name lower-cased (`digits`).
    pub name: String,
    /// The model's own name (`Digits`).
    pub model: String,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    /// The compiled batch sizes, ascending.
    pub batches: Vec<usize>,
    /// `--batch N`: one size (else powers of two up to the maximum).
    pub exact: bool,
    /// The preprocessing applied to an input: (input name, transform name).
    pub preprocess: Option<(String, String)>,
    pub threads: usize,
    pub blob_len: usize,
    pub fns_len: usize,
    pub weights_count: usize,
}

const KEYWORDS: &[&str] = &[
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern", "float",
    "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short", "signed", "sizeof",
    "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "batch", "bool",
];

/// A C parameter name for a port (a C keyword, or `batch`, gets a `_` appended).
fn param(name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if KEYWORDS.contains(&clean.as_str()) {
        format!("{clean}_")
    } else {
        clean
    }
}

fn ctype(p: &Port) -> &'static str {
    if p.io.i32 {
        "int32_t"
    } else {
        "float"
    }
}

fn shape_text(p: &Port) -> String {
    let d: Vec<String> = p.sample.iter().map(usize::to_string).collect();
    format!("[batch{}{}]", if d.is_empty() { "" } else { ", " }, d.join(", "))
}

impl Api {
    /// The C parameter names of the inputs and of the outputs, all distinct (an output
    /// named like an input gets `_out`).
    fn param_names(&self) -> (Vec<String>, Vec<String>) {
        let ins: Vec<String> = self.inputs.iter().map(|p| param(&p.name)).collect();
        let mut taken: Vec<String> = ins.clone();
        let mut outs = Vec::new();
        for p in &self.outputs {
            let mut n = param(&p.name);
            while taken.contains(&n) {
                n.push_str("_out");
            }
            taken.push(n.clone());
            outs.push(n);
        }
        (ins, outs)
    }

    fn signature(&self) -> String {
        let (ins, outs) = self.param_names();
        let mut args: Vec<String> =
            self.inputs.iter().zip(&ins).map(|(p, n)| format!("const {} *{n}", ctype(p))).collect();
        args.push("int64_t batch".into());
        args.extend(self.outputs.iter().zip(&outs).map(|(p, n)| format!("{} *{n}", ctype(p))));
        format!("int {}_run({})", self.name, args.join(", "))
    }

    fn max_rank(&self) -> usize {
        self.inputs.iter().chain(&self.outputs).map(|p| p.sample.len()).max().unwrap_or(0).max(1)
    }

    /// The header.
    pub fn header(&self) -> String {
        let n = &self.name;
        let up = n.to_uppercase();
        let max = self.batches.last().copied().unwrap_or(1);
        let list = |ps: &[Port]| -> String {
            ps.iter()
                .enumerate()
                .map(|(i, p)| {
                    format!(
                        " *   {i}: {} {}{}, {} values per sample{}\n",
                        p.name,
                        if p.io.i32 { "int32_t" } else { "float" },
                        shape_text(p),
                        p.sample.iter().product::<usize>(),
                        match p.io.bound {
                            Some(b) if p.io.i32 => format!(", ids in 0..{b}"),
                            _ => String::new(),
                        }
                    )
                })
                .collect()
        };
        let batch_rule = if self.exact {
            format!(
                " * One step is compiled, for {max} rows: a call with batch b (1 <= b <= {max}) copies its\n \
                 * b rows in, zeroes the other {max} - b, runs the step and copies b rows out.\n"
            )
        } else {
            let sizes: Vec<String> = self.batches.iter().map(usize::to_string).collect();
            format!(
                " * Steps are compiled for batch sizes {} (powers of two, and the maximum).\n \
                 * A call with batch b (1 <= b <= {max}) runs the smallest of them that is >= b: its b rows\n \
                 * are copied in, the other rows zeroed, and b rows are copied out. Rows are\n \
                 * independent in an eval graph, so padding does not change the results.\n",
                sizes.join(", ")
            )
        };
        let pre = match &self.preprocess {
            Some((input, kind)) => format!(
                " * The checkpoint's preprocessing (`{kind}`) is embedded and applied to `{input}` inside\n \
                 * {n}_run: pass raw features, as to `nnc predict --checkpoint`.\n"
            ),
            None => " * No preprocessing: inputs are used as given.\n".to_string(),
        };
        let threads = if self.threads > 1 {
            format!(
                " * Built with --threads {}: large products and kernels are split across the\n \
                 * library's worker threads (started on the first call that splits; they spin\n \
                 * for 1 ms after a call, then sleep).\n",
                self.threads
            )
        } else {
            " * Each call runs on the calling thread only.\n".to_string()
        };
        format!(
            r#"/* {n}.h: the model `{model}`, compiled ahead of time by `nnc build`.
 *
 * Link:  cc prog.c -L<dir> -l{n} -Wl,-rpath,<dir> -lm          (shared: lib{n}.so)
 *        cc prog.c <dir>/lib{n}.a -lm -lpthread -ldl            (static: lib{n}.a)
 * Nothing else is needed: the compiled code, the runtime (GEMM microkernels, host
 * kernels) and the trained weights are inside the library.
 *
 * {signature}
 *   Runs the eval graph on `batch` samples. Each input points to `batch` samples,
 *   row-major, in declaration order; each output receives `batch` samples. Inputs:
{inputs} *   Outputs:
{outputs} *   Returns {up}_OK (0) or an error code below; on an error the outputs are untouched
 *   except after {up}_ERR_INTERNAL.
 *
 * Batch sizes:
{batch_rule} *
 * Preprocessing:
{pre} *
 * Thread safety: every function may be called from several threads at once. The
 * embedded model is decoded on the first call (pthread_once); each thread runs on its
 * own arena and GEMM workspace, allocated on its first call at each compiled batch size
 * and kept for its next calls until {n}_release_thread() or the thread exits; the
 * weights are read-only.
{threads} * Floating point: calls run with denormals flushed to zero (MXCSR FTZ/DAZ), as
 * `nnc predict` does; the caller's mode is restored before returning.
 * The code was compiled for the CPU features of the machine that ran `nnc build`.
 */
#ifndef NNC_{up}_H
#define NNC_{up}_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {up}_OK 0
/* batch < 1 or batch > {n}_max_batch() */
#define {up}_ERR_BATCH 1
/* the arena or workspace for this batch size could not be allocated */
#define {up}_ERR_MEMORY 2
/* an int32 input holds an id outside its range (see {n}_input_bound) */
#define {up}_ERR_ID 3
/* a null input or output pointer */
#define {up}_ERR_NULL 4
/* the embedded model could not be loaded (a damaged library) */
#define {up}_ERR_LOAD 5
/* an internal error (a bug in nnc) */
#define {up}_ERR_INTERNAL 6

#define {up}_NUM_INPUTS {ni}
#define {up}_NUM_OUTPUTS {no}
#define {up}_MAX_BATCH {max}
/* The largest rank of one sample of any input or output. */
#define {up}_MAX_RANK {rank}

{signature};

/* As {n}_run, with the inputs and outputs as arrays of pointers in declaration order. */
int {n}_run_v(const void *const *inputs, int64_t batch, void *const *outputs);

/* The largest batch a call takes. */
int64_t {n}_max_batch(void);
/* The compiled batch sizes: writes up to `cap` of them (ascending) to `sizes`, returns
 * how many there are. */
int {n}_batch_sizes(int64_t *sizes, int cap);
int {n}_num_inputs(void);
int {n}_num_outputs(void);
/* The name of input or output i; NULL when i is out of range. */
const char *{n}_input_name(int i);
const char *{n}_output_name(int i);
/* 0 float32, 1 int32; -1 when i is out of range. */
int {n}_input_dtype(int i);
int {n}_output_dtype(int i);
/* The shape of one sample (the batch dimension left out): writes *rank dims (at most
 * {up}_MAX_RANK) to dims; returns 0, or -1 when i is out of range. */
int {n}_input_shape(int i, int64_t *dims, int *rank);
int {n}_output_shape(int i, int64_t *dims, int *rank);
/* Values per sample (the product of the shape); -1 when i is out of range. */
int64_t {n}_input_size(int i);
int64_t {n}_output_size(int i);
/* For an int32 input, the ids it takes are 0..bound-1; -1 when any id is taken (or i is
 * out of range, or the input is float32). */
int64_t {n}_input_bound(int i);
/* A short description of a return code. */
const char *{n}_strerror(int code);
/* Frees the calling thread's buffers (the next call allocates them again). */
void {n}_release_thread(void);

#ifdef __cplusplus
}}
#endif

#endif
"#,
            model = self.model,
            signature = self.signature(),
            inputs = list(&self.inputs),
            outputs = list(&self.outputs),
            ni = self.inputs.len(),
            no = self.outputs.len(),
            rank = self.max_rank(),
        )
    }

    /// The C file of per-model functions.
    pub fn source(&self) -> String {
        let n = &self.name;
        let up = n.to_uppercase();
        let strs = |ps: &[Port]| ps.iter().map(|p| format!("\"{}\"", p.name)).collect::<Vec<_>>().join(", ");
        let nums = |v: Vec<String>| if v.is_empty() { "0".to_string() } else { v.join(", ") };
        let dtypes = |ps: &[Port]| nums(ps.iter().map(|p| if p.io.i32 { "1" } else { "0" }.to_string()).collect());
        let sizes = |ps: &[Port]| nums(ps.iter().map(|p| p.sample.iter().product::<usize>().to_string()).collect());
        let ranks = |ps: &[Port]| nums(ps.iter().map(|p| p.sample.len().to_string()).collect());
        let dims = |ps: &[Port]| {
            let rows: Vec<String> = ps
                .iter()
                .map(|p| {
                    let mut d: Vec<String> = p.sample.iter().map(usize::to_string).collect();
                    d.resize(self.max_rank(), "0".into());
                    format!("{{{}}}", d.join(", "))
                })
                .collect();
            if rows.is_empty() {
                "{0}".to_string()
            } else {
                rows.join(", ")
            }
        };
        let bounds =
            nums(self.inputs.iter().map(|p| p.io.bound.filter(|_| p.io.i32).unwrap_or(-1).to_string()).collect());
        let batches = nums(self.batches.iter().map(usize::to_string).collect());
        let (ins, outs) = self.param_names();
        let arr = |v: &[String]| if v.is_empty() { "0".to_string() } else { v.join(", ") };
        let max = self.batches.last().copied().unwrap_or(1);
        format!(
            r#"/* Generated by nnc build: the per-model functions of lib{n}. */
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include "{n}.h"

#define API __attribute__((visibility("default")))

extern const unsigned char nnc_{n}_blob[];
extern const void *const nnc_{n}_fns[];
extern const float nnc_{n}_weights[];
void *nnc_rt_load(const unsigned char *blob, uint64_t len, const void *const *fns, uint64_t nfns,
                  const float *weights, uint64_t nweights);
int nnc_rt_run(const void *model, const void *const *inputs, int64_t batch, void *const *outputs);
void nnc_rt_release(const void *model);

static void *model;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void) {{
    model = nnc_rt_load(nnc_{n}_blob, {blob}u, nnc_{n}_fns, {fns}u, nnc_{n}_weights, {weights}u);
}}

static const char *const input_names[] = {{{in_names}}};
static const char *const output_names[] = {{{out_names}}};
static const int input_dtypes[] = {{{in_dtypes}}};
static const int output_dtypes[] = {{{out_dtypes}}};
static const int64_t input_sizes[] = {{{in_sizes}}};
static const int64_t output_sizes[] = {{{out_sizes}}};
static const int input_ranks[] = {{{in_ranks}}};
static const int output_ranks[] = {{{out_ranks}}};
static const int64_t input_dims[][{rank}] = {{{in_dims}}};
static const int64_t output_dims[][{rank}] = {{{out_dims}}};
static const int64_t input_bounds[] = {{{bounds}}};
static const int64_t batch_sizes[] = {{{batches}}};

API int {n}_run_v(const void *const *inputs, int64_t batch, void *const *outputs) {{
    pthread_once(&once, load);
    if (!model) return {up}_ERR_LOAD;
    return nnc_rt_run(model, inputs, batch, outputs);
}}

API {signature} {{
    const void *ins[] = {{{ins}}};
    void *outs[] = {{{outs}}};
    return {n}_run_v(ins, batch, outs);
}}

API int64_t {n}_max_batch(void) {{ return {max}; }}
API int {n}_batch_sizes(int64_t *sizes, int cap) {{
    int k = (int)(sizeof batch_sizes / sizeof batch_sizes[0]);
    for (int i = 0; i < k && i < cap; i++) sizes[i] = batch_sizes[i];
    return k;
}}
API int {n}_num_inputs(void) {{ return {ni}; }}
API int {n}_num_outputs(void) {{ return {no}; }}
API const char *{n}_input_name(int i) {{ return i >= 0 && i < {ni} ? input_names[i] : NULL; }}
API const char *{n}_output_name(int i) {{ return i >= 0 && i < {no} ? output_names[i] : NULL; }}
API int {n}_input_dtype(int i) {{ return i >= 0 && i < {ni} ? input_dtypes[i] : -1; }}
API int {n}_output_dtype(int i) {{ return i >= 0 && i < {no} ? output_dtypes[i] : -1; }}
API int64_t {n}_input_size(int i) {{ return i >= 0 && i < {ni} ? input_sizes[i] : -1; }}
API int64_t {n}_output_size(int i) {{ return i >= 0 && i < {no} ? output_sizes[i] : -1; }}
API int64_t {n}_input_bound(int i) {{ return i >= 0 && i < {ni} ? input_bounds[i] : -1; }}
API int {n}_input_shape(int i, int64_t *dims, int *rank) {{
    if (i < 0 || i >= {ni}) return -1;
    *rank = input_ranks[i];
    for (int k = 0; k < input_ranks[i]; k++) dims[k] = input_dims[i][k];
    return 0;
}}
API int {n}_output_shape(int i, int64_t *dims, int *rank) {{
    if (i < 0 || i >= {no}) return -1;
    *rank = output_ranks[i];
    for (int k = 0; k < output_ranks[i]; k++) dims[k] = output_dims[i][k];
    return 0;
}}
API const char *{n}_strerror(int code) {{
    switch (code) {{
    case {up}_OK: return "ok";
    case {up}_ERR_BATCH: return "batch out of range (1 to {max})";
    case {up}_ERR_MEMORY: return "out of memory";
    case {up}_ERR_ID: return "an id input outside its range";
    case {up}_ERR_NULL: return "a null input or output pointer";
    case {up}_ERR_LOAD: return "the embedded model could not be loaded";
    case {up}_ERR_INTERNAL: return "internal error";
    default: return "unknown error code";
    }}
}}
API void {n}_release_thread(void) {{
    if (model) nnc_rt_release(model);
}}
"#,
            blob = self.blob_len,
            fns = self.fns_len,
            weights = self.weights_count,
            in_names = if self.inputs.is_empty() { "NULL".into() } else { strs(&self.inputs) },
            out_names = if self.outputs.is_empty() { "NULL".into() } else { strs(&self.outputs) },
            in_dtypes = dtypes(&self.inputs),
            out_dtypes = dtypes(&self.outputs),
            in_sizes = sizes(&self.inputs),
            out_sizes = sizes(&self.outputs),
            in_ranks = ranks(&self.inputs),
            out_ranks = ranks(&self.outputs),
            rank = self.max_rank(),
            in_dims = dims(&self.inputs),
            out_dims = dims(&self.outputs),
            signature = self.signature(),
            ins = arr(&ins),
            outs = arr(&outs),
            ni = self.inputs.len(),
            no = self.outputs.len(),
        )
    }
}
