//! Buffer planning: liveness over the kernel schedule, then fixed offsets in one arena.
//!
//! Parameters and states (model states and optimizer states) live in a persistent
//! region that survives across steps; everything else (inputs, activations kept for the
//! backward pass, gradients, temporaries) gets an offset in the step's arena, reused as
//! soon as its last reader has run (first fit). An update whose kernel is elementwise
//! (on its own, or a GEMM's epilogue that does not read the parameter as an operand)
//! and runs after every reader of its parameter is computed in place, into the
//! parameter's own storage; other updates are copied at the end of the step.
//! The plan is a side table keyed by value: codegen takes `(&Schedule, &Plan)`.

use crate::fusion::{reads, Kernel, Schedule};
use crate::ir::{Graph, Op, Value};

/// Floats per alignment unit: buffers start on 64-byte boundaries.
pub const ALIGN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The step's scratch memory.
    Arena,
    /// Parameters and states, kept across steps.
    Persistent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub region: Region,
    /// In f32 elements.
    pub offset: usize,
    pub len: usize,
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// Per value: where its data lives (None: fused, never stored).
    pub slots: Vec<Option<Slot>>,
    pub arena_len: usize,
    pub persistent_len: usize,
    /// Persistent slot of each parameter and each state (declaration order).
    pub param_slots: Vec<Slot>,
    pub state_slots: Vec<Slot>,
    /// (update value, destination) pairs copied at the end of the step.
    pub copies: Vec<(Value, Slot)>,
    /// Per kernel: the arena buffers whose last reader it is (for the NaN check).
    pub dead_after: Vec<Vec<Value>>,
    /// Live range per stored value: (first kernel, last kernel), kernel -1 = before all.
    pub live: Vec<Option<(i64, i64)>>,
    /// Sum of every node's size, as if each had its own buffer (bytes).
    pub naive_bytes: usize,
    /// Per value: the value whose buffer it took in place (an elementwise output written
    /// over an operand that dies in its kernel).
    pub in_place_of: Vec<Option<Value>>,
}

fn round(n: usize) -> usize {
    n.div_ceil(ALIGN).max(1) * ALIGN
}

fn size(g: &Graph, v: Value) -> usize {
    g.ty(v).shape.iter().map(|d| d.as_const().unwrap_or(0).max(0) as usize).product()
}

/// Whether elementwise kernel `k` reads the buffer rooted at `x` only element for
/// element at the position it stores: every fused node that reads `x` (or a view of it)
/// is an elementwise op of the loop's shape, not a broadcast or a slice.
fn read_in_place(g: &Graph, s: &Schedule, k: &Kernel, x: usize) -> bool {
    let Kernel::Elementwise { rows, cols, .. } = k else { return false };
    k.outs().into_iter().all(|o| {
        crate::fusion::fused_nodes(g, s, o).into_iter().all(|v| {
            let node = &g.nodes[v];
            node.args.iter().all(|&a| {
                let i = a.as_u32() as usize;
                if !s.materialized[i] || s.storage[i].as_u32() as usize != x {
                    return true;
                }
                matches!(node.op, Op::Unary(_) | Op::Binary(_) | Op::Select)
                    && s.view_offset[i] == 0
                    && s.row_stride[i] == 0
                    && size(g, a) == rows * cols
                    // (a GEMM's epilogue may run a view's loop regrouped to the product's)
                    && *cols % crate::fusion::loop_shape(g, a).1.max(1) == 0
            })
        })
    })
}

/// Plans every buffer of a scheduled, concrete graph.
pub fn plan(g: &Graph, s: &Schedule) -> Plan {
    let n = g.len();
    let idx = |v: Value| v.as_u32() as usize;
    let nk = s.kernels.len() as i64;
    // Persistent region: parameters then states.
    let mut slots: Vec<Option<Slot>> = vec![None; n];
    let mut off = 0;
    let mut param_slots = Vec::new();
    for p in &g.params {
        let len = size(g, p.value);
        let slot = Slot { region: Region::Persistent, offset: off, len };
        slots[idx(p.value)] = Some(slot);
        param_slots.push(slot);
        off += round(len);
    }
    let mut state_slots = Vec::new();
    for st in &g.states {
        let len = size(g, st.value);
        let slot = Slot { region: Region::Persistent, offset: off, len };
        slots[idx(st.value)] = Some(slot);
        state_slots.push(slot);
        off += round(len);
    }
    let persistent_len = off;
    // Liveness of storage roots.
    let mut live: Vec<Option<(i64, i64)>> = vec![None; n];
    for i in &g.inputs {
        live[idx(i.value)] = Some((-1, -1));
    }
    let mut last_reader = vec![-1i64; n];
    for (ki, k) in s.kernels.iter().enumerate() {
        let ki = ki as i64;
        for out in k.outs() {
            let o = idx(s.storage[idx(out)]);
            live[o] = Some((live[o].map(|l| l.0).unwrap_or(ki), ki));
        }
        for r in reads(g, s, k) {
            last_reader[idx(r)] = ki;
            if let Some(l) = live[idx(r)].as_mut() {
                l.1 = l.1.max(ki);
            }
        }
    }
    let pinned: Vec<Value> = g
        .outputs
        .iter()
        .map(|(_, v)| *v)
        .chain(g.loss)
        .chain(g.params.iter().filter_map(|p| p.update))
        .chain(g.states.iter().filter_map(|s| s.update))
        .collect();
    for v in &pinned {
        if let Some(l) = live[idx(s.storage[idx(*v)])].as_mut() {
            l.1 = nk;
        }
    }
    // Inputs keep their buffers for the whole step, so a caller may set them once and
    // run several times (L-BFGS evaluates one batch many times).
    for i in &g.inputs {
        live[idx(i.value)] = Some((-1, nk));
    }
    // In-place updates: the update's kernel is elementwise (or a GEMM's epilogue), runs
    // after the last reader of the old value, and nothing else needs the update's own
    // buffer.
    let mut copies = Vec::new();
    let kernel_of: std::collections::HashMap<Value, usize> =
        s.kernels.iter().enumerate().flat_map(|(i, k)| k.outs().into_iter().map(move |o| (o, i))).collect();
    let updates: Vec<(Value, Value, Slot)> = g
        .params
        .iter()
        .zip(&param_slots)
        .filter_map(|(p, sl)| p.update.map(|u| (p.value, u, *sl)))
        .chain(g.states.iter().zip(&state_slots).filter_map(|(st, sl)| st.update.map(|u| (st.value, u, *sl))))
        .collect();
    let mut in_place = vec![false; n];
    for &(old, u, slot) in &updates {
        let root = s.storage[idx(u)];
        let ok = root == u
            && kernel_of.get(&u).is_some_and(|&k| match &s.kernels[k] {
                Kernel::Elementwise { .. } => true,
                // A product's epilogue writes the update block by block while later blocks
                // still read the product's operands: those must not be what it replaces.
                Kernel::MatMul { a, b, epilogue: Some(e), .. } => {
                    e.outs().contains(&u) && ![a, b].iter().any(|&&x| s.storage[idx(x)] == s.storage[idx(old)])
                }
                _ => false,
            })
            && kernel_of.get(&u).is_some_and(|&k| last_reader[idx(old)] <= k as i64 && last_reader[idx(u)] <= k as i64)
            && !g.outputs.iter().any(|(_, v)| *v == u)
            && g.loss != Some(u)
            && updates.iter().filter(|(_, u2, _)| *u2 == u).count() == 1
            && !matches!(g.nodes[u].op, Op::Input(_) | Op::Param(_) | Op::State(_));
        if ok {
            slots[idx(u)] = Some(slot);
            in_place[idx(u)] = true;
        } else {
            copies.push((u, slot));
        }
    }
    // In-place elementwise kernels: an output takes the buffer of an operand of the same
    // size that dies in its kernel and that the loop reads only at the position it
    // writes (each iteration loads, then stores). The pair becomes one buffer, live from
    // the operand's first kernel to the output's last reader.
    let mut home: Vec<usize> = (0..n).collect();
    for (ki, k) in s.kernels.iter().enumerate() {
        // A GEMM's epilogue may also write into its product (read, then written, block by
        // block), but never into the GEMM's operands, which later blocks still read.
        let (k, product, operands) = match k {
            Kernel::Elementwise { .. } => (k, None, Vec::new()),
            Kernel::MatMul { out, a, b, epilogue: Some(e), .. } => {
                (e.as_ref(), Some(idx(*out)), vec![home[idx(s.storage[idx(*a)])], home[idx(s.storage[idx(*b)])]])
            }
            _ => continue,
        };
        let ki = ki as i64;
        let mut taken: Vec<usize> = Vec::new();
        let read = reads(g, s, k);
        for out in k.outs() {
            let y = idx(out);
            if s.storage[y] != out || slots[y].is_some() || s.row_stride[y] != 0 || pinned.contains(&out) {
                continue;
            }
            let candidate = read.iter().copied().map(idx).find(|&x| {
                let r = home[x];
                slots[x].is_none()
                    && slots[r].is_none()
                    && !taken.contains(&r)
                    && !operands.contains(&r)
                    && live[r].is_some_and(|l| l.1 == ki && (l.0 < ki || Some(x) == product))
                    && size(g, Value::from_u32(x as u32)) == size(g, out)
                    && !matches!(g.nodes[Value::from_u32(x as u32)].op, Op::Input(_))
                    && read_in_place(g, s, k, x)
            });
            if let Some(x) = candidate {
                let r = home[x];
                taken.push(r);
                home[y] = r;
                let end = live[y].map_or(ki, |l| l.1);
                if let Some(l) = live[r].as_mut() {
                    l.1 = end;
                }
                live[y] = None;
            }
        }
    }
    // First-fit offsets in the arena, largest buffers first (then by first kernel): placing
    // in order of first kernel left gaps too small for the big gradients (MLP 3.71 MB
    // against 2.81 MB now).
    let mut order: Vec<usize> =
        (0..n).filter(|&i| live[i].is_some() && slots[i].is_none() && s.storage[i].as_u32() as usize == i).collect();
    order.sort_by_key(|&i| {
        (std::cmp::Reverse(size(g, Value::from_u32(i as u32))), live[i].map(|l| l.0).unwrap_or(0), i)
    });
    // Placed buffers are kept in offset order, so finding the first gap is one pass over
    // those live at the same time, with no sorting per buffer.
    let mut placed: Vec<(usize, usize, i64, i64)> = Vec::new(); // offset, len, from, to
    let mut arena_len = 0;
    for i in order {
        let (from, to) = live[i].unwrap_or((0, 0));
        let len = round(size(g, Value::from_u32(i as u32)));
        let mut at = 0;
        for p in placed.iter().filter(|p| !(p.3 < from || to < p.2)) {
            if at + len <= p.0 {
                break;
            }
            at = at.max(p.0 + p.1);
        }
        let pos = placed.partition_point(|p| (p.0, p.0 + p.1) <= (at, at + len));
        placed.insert(pos, (at, len, from, to));
        arena_len = arena_len.max(at + len);
        slots[i] = Some(Slot { region: Region::Arena, offset: at, len: size(g, Value::from_u32(i as u32)) });
    }
    for y in 0..n {
        if home[y] != y {
            slots[y] = slots[home[y]].map(|sl| Slot { len: size(g, Value::from_u32(y as u32)), ..sl });
        }
    }
    // Views take their root's slot.
    for i in 0..n {
        let r = s.storage[i].as_u32() as usize;
        if r != i && s.materialized[i] {
            slots[i] = slots[r].map(|sl| Slot {
                offset: sl.offset + s.view_offset[i],
                len: size(g, Value::from_u32(i as u32)),
                ..sl
            });
        }
    }
    let mut dead_after = vec![Vec::new(); s.kernels.len()];
    for i in 0..n {
        if let (Some((_, to)), Some(slot)) = (live[i], slots[i]) {
            if slot.region == Region::Arena && to >= 0 && to < nk && !in_place[i] {
                dead_after[to as usize].push(Value::from_u32(i as u32));
            }
        }
    }
    let naive_bytes = g.nodes.keys().map(|v| size(g, v) * 4).sum();
    let in_place_of = (0..n).map(|y| (home[y] != y).then(|| Value::from_u32(home[y] as u32))).collect();
    Plan {
        slots,
        arena_len,
        persistent_len,
        param_slots,
        state_slots,
        copies,
        dead_after,
        live,
        naive_bytes,
        in_place_of,
    }
}
