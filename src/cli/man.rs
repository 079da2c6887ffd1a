//! `nnc man [COMMAND]`: the manual page (roff, for `man -l -`) of nnc or of one command,
//! generated from the same clap definitions the commands use.

use super::*;

#[derive(clap::Args)]
pub struct Args {
    /// A command (`train`, `tune`, ...): its own page; without: the page of nnc.
    pub command: Option<String>,
}

pub fn run(a: Args, _opts: RenderOptions) -> i32 {
    use clap::CommandFactory;
    let root = Cli::command();
    let cmd = match &a.command {
        None => root,
        Some(name) => match root.find_subcommand(name) {
            Some(c) => c.clone().name(format!("nnc-{name}")),
            None => {
                let names: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).collect();
                errln!("error: no command `{name}`; the commands are: {}", names.join(", "));
                return 2;
            }
        },
    };
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
        return fail(&format!("cannot render the manual page: {e}"));
    }
    outs!("{}", String::from_utf8_lossy(&out));
    0
}
