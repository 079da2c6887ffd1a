//! Which machinery runs a graph: native code compiled by Cranelift, or the reference
//! interpreter (the oracle the native code is tested against; slow).

/// Native code compiled by Cranelift, or the reference interpreter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// JIT-compiled native code (the default).
    #[default]
    Jit,
    /// The reference interpreter (f32; slow).
    Interpreter,
}

impl Backend {
    /// Whether it is the JIT.
    pub fn jit(self) -> bool {
        self == Backend::Jit
    }

    /// `jit` or `interp`, as the command line's `--backend` names it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Jit => "jit",
            Backend::Interpreter => "interp",
        }
    }
}
