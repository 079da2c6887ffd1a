//! `nnc init`.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (`.nn`).
    pub file: PathBuf,
    /// Seed of the initializers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the parameters and states (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Which model of the file (when it has several).
    #[arg(long)]
    pub model: Option<String>,
}

pub fn run(a: Args, opts: RenderOptions) -> i32 {
    let Args { file, seed, out, model } = a;
    let Some(c) = compile(&file, opts) else { return 1 };
    let p = match pick(&c, model.as_deref()) {
        Ok(p) => p,
        Err(m) => return fail(&m),
    };
    // Initialized in f64, written as f32: 12 bytes per value at the peak.
    let values = p.train.param_count() + p.train.states.iter().map(|s| s.shape.iter().product::<i64>()).sum::<i64>();
    if let Err(m) = crate::limits::check_alloc((values.max(0) as u64).saturating_mul(12), "initializing the parameters")
    {
        return fail(&m);
    }
    let (params, states) = crate::runtime::init::init_all(&p.train, seed);
    let mut map = crate::tensors::TensorMap::new();
    for (d, v) in p.train.params.iter().zip(params) {
        map.insert(d.name.clone(), crate::tensors::HostTensor::f32(d.shape.iter().map(|&x| x as usize).collect(), v));
    }
    // A teacher's frozen tensors stay in the teacher's checkpoint.
    for (d, v) in p.train.states.iter().zip(states).filter(|(d, _)| d.teacher_source().is_none()) {
        map.insert(d.name.clone(), crate::tensors::HostTensor::f32(d.shape.iter().map(|&x| x as usize).collect(), v));
    }
    let meta = std::collections::BTreeMap::from([
        ("model".to_string(), p.name.clone()),
        ("seed".to_string(), seed.to_string()),
    ]);
    match crate::tensors::write(&out, &map, Some(meta)) {
        Ok(()) => {
            errln!("wrote {} tensors to {}", map.len(), out.display());
            0
        }
        Err(m) => fail(&m),
    }
}
