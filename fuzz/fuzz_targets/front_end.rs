//! Arbitrary bytes through the whole front end: parse, lower, verify, then for every
//! model that compiles its training step at batch 2 (autodiff and the optimizer update),
//! simplification, fusion and the buffer plan. The oracle is the limits: nnc returns an
//! error or a plan, never panics, and stays within the time and memory libFuzzer allows
//! (`-timeout`, `-rss_limit_mb`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let text = nnc::internals::pipeline::normalize_source(text.to_string());
    let Ok(compiled) = nnc::internals::pipeline::compile_source("fuzz.nn", &text, None) else { return };
    for p in &compiled.programs {
        let Ok(g) = nnc::internals::pipeline::step_graph(p, 2) else { continue };
        let g = nnc::internals::simplify::simplify(&g);
        if let Ok(schedule) = nnc::internals::fusion::fuse(&g) {
            let _ = nnc::internals::buffers::plan(&g, &schedule);
        }
    }
});
