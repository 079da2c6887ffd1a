//! Types of IR values: an element type and a shape whose dims are integer polynomials
//! over the model's symbols (`B`, `2*B`, `B*T`).
//!
//! Symbols come from `input` declarations and are bound to numbers when a graph is
//! compiled for a batch size (`Dim::eval`). Polynomials make reshape checks exact:
//! `[B, 16, 7, 7]` flattens to `[B, 784]` because `B*784 == B*16*7*7`.

use std::fmt;

/// A model symbol, an index into `Graph::symbols`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(pub u32);

/// An integer polynomial over symbols, kept canonical: terms sorted by monomial, no zero
/// coefficients, each monomial a sorted list of symbols (with repetition for powers).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dim {
    terms: Vec<(Vec<Sym>, i64)>,
}

impl Dim {
    pub fn konst(v: i64) -> Dim {
        if v == 0 {
            Dim { terms: vec![] }
        } else {
            Dim { terms: vec![(vec![], v)] }
        }
    }
    pub fn sym(s: Sym) -> Dim {
        Dim { terms: vec![(vec![s], 1)] }
    }
    /// The value when the polynomial has no symbols.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.as_slice() {
            [] => Some(0),
            [(m, c)] if m.is_empty() => Some(*c),
            _ => None,
        }
    }
    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }
    /// The terms `(monomial, coefficient)`, canonical: monomials sorted, no zero
    /// coefficients (the ONNX exporter computes symbolic dims at run time from them).
    pub fn terms(&self) -> &[(Vec<Sym>, i64)] {
        &self.terms
    }
    pub fn symbols(&self) -> impl Iterator<Item = Sym> + '_ {
        self.terms.iter().flat_map(|(m, _)| m.iter().copied())
    }

    fn normalize(mut terms: Vec<(Vec<Sym>, i64)>) -> Dim {
        for (m, _) in terms.iter_mut() {
            m.sort_unstable();
        }
        terms.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Vec<Sym>, i64)> = Vec::with_capacity(terms.len());
        for (m, c) in terms {
            match out.last_mut() {
                Some((lm, lc)) if *lm == m => *lc = lc.saturating_add(c),
                _ => out.push((m, c)),
            }
        }
        out.retain(|(_, c)| *c != 0);
        Dim { terms: out }
    }

    /// `self + other`, or None on overflow.
    pub fn add(&self, other: &Dim) -> Option<Dim> {
        let mut terms = self.terms.clone();
        terms.extend(other.terms.iter().cloned());
        let d = Dim::normalize(terms);
        d.check()
    }
    pub fn neg(&self) -> Dim {
        Dim { terms: self.terms.iter().map(|(m, c)| (m.clone(), c.saturating_neg())).collect() }
    }
    pub fn sub(&self, other: &Dim) -> Option<Dim> {
        self.add(&other.neg())
    }
    pub fn mul(&self, other: &Dim) -> Option<Dim> {
        let mut terms = Vec::with_capacity(self.terms.len() * other.terms.len());
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut m = ma.clone();
                m.extend(mb.iter().copied());
                if m.len() > 8 {
                    return None;
                }
                terms.push((m, ca.checked_mul(*cb)?));
            }
        }
        Dim::normalize(terms).check()
    }
    /// Exact division: Some only when every coefficient is divisible (constants), or
    /// when dividing by a monomial polynomial that divides every term.
    pub fn div_exact(&self, other: &Dim) -> Option<Dim> {
        if let Some(d) = other.as_const() {
            if d == 0 {
                return None;
            }
            let mut terms = Vec::new();
            for (m, c) in &self.terms {
                if c % d != 0 {
                    return None;
                }
                terms.push((m.clone(), c / d));
            }
            return Some(Dim { terms });
        }
        // Division by a single term `k * S1 * S2 ...`.
        if let [(dm, dc)] = other.terms.as_slice() {
            let mut terms = Vec::new();
            for (m, c) in &self.terms {
                if c % dc != 0 {
                    return None;
                }
                let mut rest = m.clone();
                for s in dm {
                    let pos = rest.iter().position(|x| x == s)?;
                    rest.remove(pos);
                }
                terms.push((rest, c / dc));
            }
            return Some(Dim::normalize(terms));
        }
        if self == other {
            return Some(Dim::konst(1));
        }
        None
    }
    /// Values far beyond any tensor are rejected, so later arithmetic cannot overflow.
    fn check(self) -> Option<Dim> {
        if self.terms.iter().all(|(_, c)| c.unsigned_abs() <= (1u64 << 62)) {
            Some(self)
        } else {
            None
        }
    }
    /// The value with every symbol bound; None if a symbol is unbound or on overflow.
    pub fn eval(&self, bind: &dyn Fn(Sym) -> Option<i64>) -> Option<i64> {
        let mut total: i64 = 0;
        for (m, c) in &self.terms {
            let mut t = *c;
            for s in m {
                t = t.checked_mul(bind(*s)?)?;
            }
            total = total.checked_add(t)?;
        }
        Some(total)
    }
    /// Replaces bound symbols by their values, leaving the others.
    pub fn substitute(&self, bind: &dyn Fn(Sym) -> Option<i64>) -> Option<Dim> {
        let mut terms = Vec::new();
        for (m, c) in &self.terms {
            let mut coef = *c;
            let mut rest = Vec::new();
            for s in m {
                match bind(*s) {
                    Some(v) => coef = coef.checked_mul(v)?,
                    None => rest.push(*s),
                }
            }
            terms.push((rest, coef));
        }
        Dim::normalize(terms).check()
    }
    /// Renders with symbol names, e.g. `B`, `2*B`, `B*T + 1`.
    pub fn display<'a>(&'a self, names: &'a [String]) -> DimDisplay<'a> {
        DimDisplay { dim: self, names }
    }
}

pub struct DimDisplay<'a> {
    dim: &'a Dim,
    names: &'a [String],
}

impl fmt::Display for DimDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dim.terms.is_empty() {
            return write!(f, "0");
        }
        // Highest-degree terms first, constants last: `B + 1`.
        let mut terms: Vec<&(Vec<Sym>, i64)> = self.dim.terms.iter().collect();
        terms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        for (i, (m, c)) in terms.iter().enumerate() {
            let c = *c;
            if i > 0 {
                write!(f, "{}", if c < 0 { " - " } else { " + " })?;
            } else if c < 0 {
                write!(f, "-")?;
            }
            let a = c.unsigned_abs();
            let mut parts: Vec<String> = Vec::new();
            if a != 1 || m.is_empty() {
                parts.push(a.to_string());
            }
            for s in m.iter() {
                parts.push(self.names.get(s.0 as usize).cloned().unwrap_or_else(|| format!("s{}", s.0)));
            }
            write!(f, "{}", parts.join("*"))?;
        }
        Ok(())
    }
}

pub type Shape = Vec<Dim>;

/// Element types. `I32` appears only where labels and ids belong. The one `DType`: the
/// syntax, the data layer and the library's front door use it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit floats.
    F32,
    /// 32-bit integers (class labels, token ids).
    I32,
}

impl DType {
    /// `f32` or `i32`, as the language writes it.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Type {
    pub dtype: DType,
    pub shape: Shape,
}

impl Type {
    pub fn f32(shape: Shape) -> Type {
        Type { dtype: DType::F32, shape }
    }
    pub fn scalar() -> Type {
        Type::f32(vec![])
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn display<'a>(&'a self, names: &'a [String]) -> TypeDisplay<'a> {
        TypeDisplay { ty: self, names }
    }
}

pub struct TypeDisplay<'a> {
    ty: &'a Type,
    names: &'a [String],
}

impl fmt::Display for TypeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.ty.dtype.name(), shape_str(&self.ty.shape, self.names))
    }
}

/// `[B, 64]`.
pub fn shape_str(shape: &[Dim], names: &[String]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.display(names).to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Product of all dims (the element count), None on overflow.
pub fn numel(shape: &[Dim]) -> Option<Dim> {
    let mut n = Dim::konst(1);
    for d in shape {
        n = n.mul(d)?;
    }
    Some(n)
}

/// The element count with every symbol at 1 (the smallest batch): what a shape needs
/// whatever its symbols are bound to. None when the product overflows i64.
pub fn min_numel(shape: &[Dim]) -> Option<i64> {
    let mut n: i64 = 1;
    for d in shape {
        n = n.checked_mul(d.eval(&|_| Some(1))?.max(0))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomials_are_canonical() {
        let b = Dim::sym(Sym(0));
        let x = b.mul(&Dim::konst(16)).and_then(|d| d.mul(&Dim::konst(49)));
        let y = b.mul(&Dim::konst(784));
        assert_eq!(x, y);
        let names = vec!["B".to_string()];
        let z = b.add(&Dim::konst(-1)).unwrap_or_default();
        assert_eq!(z.display(&names).to_string(), "B - 1");
        assert_eq!(y.unwrap_or_default().div_exact(&b), Some(Dim::konst(784)));
        assert_eq!(Dim::konst(7).div_exact(&Dim::konst(2)), None);
        assert_eq!(Dim::konst(i64::MAX).mul(&Dim::konst(4)), None);
    }
}
