//! Number formatting shared by the IR's text forms (the printer, `Init` and the recipe's
//! literals): a leaf below `ir/mod.rs`, `print.rs` and `recipe.rs`.

/// Shortest text that reads back as the same f64 (`1`, `0.5`, `1e-5`).
pub fn num(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}
