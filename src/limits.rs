//! Documented limits that keep every input's compile time and memory bounded
//! (docs/language.md, "Limits"). Exceeding one is a diagnostic, never a crash.

/// Largest source file accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 8 << 20;
/// Deepest nesting of `( [ {` brackets.
pub const MAX_NESTING: usize = 100;
/// Deepest expression tree (a chain `a + b + ...` counts one level per operator).
pub const MAX_EXPR_DEPTH: usize = 400;
/// pest's budget of rule calls per parse: guards against pathological backtracking.
pub const PARSER_CALL_LIMIT: usize = 200_000_000;
/// Deepest chain of `fn` / layer calls while lowering.
pub const MAX_CALL_DEPTH: usize = 64;
/// Most IR nodes one graph may have after unrolling (both graphs counted separately).
pub const MAX_NODES: usize = 2_000_000;
/// Most iterations of one `for` loop.
pub const MAX_LOOP_ITERATIONS: i64 = 100_000;
/// Most elements in one tensor (2^31 - 1): offsets fit in 32-bit indices and an 8 GiB
/// f32 tensor is beyond what this tool is for.
pub const MAX_TENSOR_ELEMENTS: i64 = (1 << 31) - 1;
/// Most dimensions of one tensor.
pub const MAX_RANK: usize = 8;
/// Most copies in a layer array `[Block(64); n]`.
pub const MAX_LAYER_ARRAY: i64 = 10_000;
/// Deepest nesting of expression evaluation across inlined calls (keeps lowering within
/// an 8 MiB stack for library users).
pub const MAX_EVAL_DEPTH: usize = 1_200;
/// Most loop iterations in one lowering, all loops together.
pub const MAX_TOTAL_ITERATIONS: u64 = 2_000_000;
/// Most layer instances in one model.
pub const MAX_LAYER_INSTANCES: usize = 100_000;
/// Most bytes of one data file, and of its contents after gunzipping (1 GiB): a gzip
/// bomb stops here instead of exhausting memory.
pub const MAX_DATA_BYTES: u64 = 1 << 30;
/// Most parameters for `optimizer = bfgs`: its inverse Hessian is a dense n×n f64
/// matrix, 200 MB at 5,000 parameters.
pub const MAX_BFGS_PARAMS: usize = 5_000;
/// Most parameters for `optimizer = newton`: each iteration assembles the n×n Hessian
/// (f64) from n Hessian-vector products and factors a copy, 64 MB at 2,000 parameters;
/// the products (one backward pass over the full batch each) are what makes it slow.
pub const MAX_NEWTON_PARAMS: usize = 2_000;

/// The memory one process may plan to use: the machine's total memory (from
/// `/proc/meminfo`), or 16 GiB where that cannot be read.
pub fn memory_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kb.checked_mul(1024)
    });
    total.unwrap_or(16 << 30)
}

/// Refuses to allocate `bytes` for `what` when they exceed `memory_limit`: a clear error
/// instead of an abort in the allocator.
pub fn check_alloc(bytes: u64, what: &str) -> Result<(), String> {
    let limit = memory_limit();
    if bytes > limit {
        return Err(format!(
            "{what} needs {:.2} GB, more than this machine's {:.2} GB of memory",
            bytes as f64 / 1e9,
            limit as f64 / 1e9
        ));
    }
    Ok(())
}

/// Most diagnostics rendered for one compilation; the rest are counted ("and N more").
/// Beyond it lowering also stops looking for "did you mean" suggestions.
pub const MAX_RENDERED_DIAGNOSTICS: usize = 100;

/// Most elements of one compile-time list (`[1, 2, ...]`, `l + l`).
pub const MAX_LIST_ELEMENTS: usize = 100_000;
/// Most list elements copied by `+` in one lowering, all lists together: appending one by
/// one (`l = l + [i]`) copies the list each time, so its cost grows with the square of the
/// length; this caps it at about a second.
pub const MAX_LIST_WORK: u64 = 5_000_000;
/// Most fn and layer calls inlined in one lowering (an exponential tree of calls stops
/// here rather than exhausting memory).
pub const MAX_TOTAL_CALLS: u64 = 1_000_000;
