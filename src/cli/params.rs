//! `nnc params`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Bind the batch symbol to this size.
    #[arg(long)]
    pub batch: Option<i64>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, batch } = a;
    let Some(c) = compile(&file, opts) else { return 1 };
    for p in &c.programs {
        if let Err(m) = bind_batch(&p.train, batch) {
            errln!("error: {m}");
            return 1;
        }
        outs!("{}", params_table(p));
    }
    0
}

/// The `nnc params` table.
pub fn params_table(p: &Program) -> String {
    let g = &p.train;
    let mut rows: Vec<[String; 5]> = Vec::new();
    for d in &g.params {
        rows.push([
            d.name.clone(),
            format!("{:?}", d.shape),
            d.init.describe(),
            d.shape.iter().product::<i64>().to_string(),
            if d.decay { "yes".into() } else { "no".into() },
        ]);
    }
    for s in &g.states {
        rows.push([
            s.name.clone(),
            format!("{:?}", s.shape),
            s.init.describe(),
            s.shape.iter().product::<i64>().to_string(),
            "state".into(),
        ]);
    }
    let header = ["name", "shape", "init", "elements", "decay"];
    let mut w = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |r: &[String]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
    };
    let args: Vec<String> = p.args.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    let mut out = if args.is_empty() {
        format!("model {}\n", p.name)
    } else {
        format!("model {}({})\n", p.name, args.join(", "))
    };
    out.push_str(&line(&header.map(String::from)));
    for r in &rows {
        out.push_str(&line(r));
    }
    let params: i64 = g.param_count();
    let states: i64 = g.states.iter().map(|s| s.shape.iter().product::<i64>()).sum();
    out.push_str(&format!(
        "total: {} parameters in {} tensors ({} bytes f32), {} state values\n",
        params,
        g.params.len(),
        params * 4,
        states
    ));
    out
}
