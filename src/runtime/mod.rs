//! Running graphs: host tensors, symbol binding, and the reference interpreter.
//!
//! `interp` is the executable definition of every primitive and the oracle for every
//! later stage. It is generic over `Real` (f32 and f64) so gradient checks run in f64.

pub mod backend;
pub mod exec;
pub mod executable;
pub mod init;
pub mod interp;

pub use crate::ir::scalar::{erf64, Real};

use crate::ir::{Dim, Graph, Sym};

/// Concrete values of a graph's symbols.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bindings(pub Vec<Option<i64>>);

impl Bindings {
    pub fn get(&self, s: Sym) -> Option<i64> {
        self.0.get(s.0 as usize).copied().flatten()
    }
    /// A dim's value; errors name the unbound symbol.
    pub fn dim(&self, d: &Dim, g: &Graph) -> Result<usize, String> {
        let v = d
            .eval(&|s| self.get(s))
            .ok_or_else(|| format!("the size `{}` depends on an unbound symbol", d.display(&g.symbols)))?;
        usize::try_from(v).map_err(|_| format!("the size `{}` is negative", d.display(&g.symbols)))
    }
    pub fn shape(&self, s: &[Dim], g: &Graph) -> Result<Vec<usize>, String> {
        s.iter().map(|d| self.dim(d, g)).collect()
    }
}

/// Binds the graph's symbols from the shapes of its inputs (by input index). Dims that
/// are a single symbol bind it; every other dim is then checked. Errors name the input,
/// the expected and the found shape.
pub fn bind_inputs(g: &Graph, shapes: &[Vec<usize>]) -> Result<Bindings, String> {
    let mut b = Bindings(vec![None; g.symbols.len()]);
    for (decl, shape) in g.inputs.iter().zip(shapes) {
        let expected = crate::ir::ty::shape_str(&decl.ty.shape, &g.symbols);
        if decl.ty.shape.len() != shape.len() {
            return Err(format!("input `{}` must have shape {expected}, found {shape:?}", decl.name));
        }
        for (d, &n) in decl.ty.shape.iter().zip(shape) {
            let syms: Vec<Sym> = d.symbols().collect();
            if syms.len() == 1 && *d == Dim::sym(syms[0]) {
                match b.get(syms[0]) {
                    None => {
                        if n == 0 {
                            return Err(format!("input `{}` has an empty dim: {shape:?}", decl.name));
                        }
                        b.0[syms[0].0 as usize] = Some(n as i64)
                    }
                    Some(v) if v == n as i64 => {}
                    Some(v) => {
                        return Err(format!(
                            "input `{}` must have shape {expected} with {} = {v}, found {shape:?}",
                            decl.name, g.symbols[syms[0].0 as usize]
                        ))
                    }
                }
            }
        }
    }
    for (decl, shape) in g.inputs.iter().zip(shapes) {
        let want = b.shape(&decl.ty.shape, g)?;
        if &want != shape {
            let expected = crate::ir::ty::shape_str(&decl.ty.shape, &g.symbols);
            return Err(format!("input `{}` must have shape {expected} ({want:?}), found {shape:?}", decl.name));
        }
    }
    Ok(b)
}
