//! The `nnc` binary: runs the CLI on a thread with a large stack, so that even
//! pathological inputs within the documented limits cannot overflow it.

fn main() {
    let handle = std::thread::Builder::new().name("nnc".into()).stack_size(256 << 20).spawn(nnc::internals::cli::run);
    let code = match handle.map(|h| h.join()) {
        Ok(Ok(code)) => code,
        _ => {
            eprintln!("error: internal compiler error (please report this with the input file)");
            101
        }
    };
    std::process::exit(code);
}
