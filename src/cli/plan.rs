//! `nnc plan`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Bind the batch symbol to this size.
    #[arg(long)]
    pub batch: Option<i64>,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, batch, model } = a;
    let Some(c) = compile(&file, opts) else { return 1 };
    let p = match pick(&c, model.as_deref()) {
        Ok(p) => p,
        Err(m) => return fail(&m),
    };
    let b = match crate::pipeline::batch_of(p, batch) {
        Ok(b) => b,
        Err(m) => return fail(&m),
    };
    let exe = match crate::pipeline::step_graph(p, b)
        .and_then(|g| crate::runtime::executable::Executable::new(&g, &Default::default()))
    {
        Ok(e) => e,
        Err(m) => return fail(&m),
    };
    outs!("{}", plan_table(&exe, &p.name, b));
    let n: usize = p.train.params.iter().map(|q| q.shape.iter().product::<i64>() as usize).sum();
    if let Some((bytes, what)) = crate::train::session::host_state_bytes(&p.settings, n) {
        outs!(
            "host optimizer {}: it runs outside the compiled step (planned above as plain gradient descent); its own \
             state: {bytes} bytes ({what}, {n} parameters)\n",
            p.settings.optimizer.name
        );
    }
    0
}

/// The `nnc plan` table.
fn plan_table(exe: &crate::runtime::executable::Executable, name: &str, batch: usize) -> String {
    use crate::buffers::Region;
    let g = &exe.graph;
    let plan = &exe.plan;
    let mut out = format!("model {name} (training step, batch {batch}): {} kernels\n", exe.schedule.kernels.len());
    out.push_str(&format!("{:<8} {:<14} {:>10} {:>10} {:>9}  {}\n", "value", "op", "offset", "bytes", "live", "type"));
    for (i, slot) in plan.slots.iter().enumerate() {
        let v = crate::ir::Value::from_u32(i as u32);
        let Some(slot) = slot else { continue };
        if slot.region != Region::Arena || exe.schedule.storage[i] != v {
            continue;
        }
        let live = match (plan.live[i], plan.in_place_of[i]) {
            (Some((a, b)), _) => format!("{a}..{b}"),
            (None, Some(x)) => format!("in {x}"),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "{:<8} {:<14} {:>10} {:>10} {:>9}  {}\n",
            v.to_string(),
            g.nodes[v].op.name(),
            slot.offset * 4,
            slot.len * 4,
            live,
            g.ty(v).display(&g.symbols)
        ));
    }
    let param_bytes: usize = plan.param_slots.iter().map(|s| s.len * 4).sum();
    let state_bytes: usize = plan.state_slots.iter().map(|s| s.len * 4).sum();
    out.push_str(&format!("arena: {} bytes ({:.2} MB)\n", plan.arena_len * 4, plan.arena_len as f64 * 4e-6));
    out.push_str(&format!(
        "naive (every value its own buffer): {} bytes ({:.2} MB)\n",
        plan.naive_bytes,
        plan.naive_bytes as f64 * 1e-6
    ));
    out.push_str(&format!("parameters: {param_bytes} bytes; gradients: computed into the arena; states and optimizer state: {state_bytes} bytes\n"));
    out.push_str(&format!(
        "updates in place: {}, copied: {}\n",
        g.params.len() + g.states.iter().filter(|s| s.update.is_some()).count() - plan.copies.len(),
        plan.copies.len()
    ));
    out
}
