//! `csv(path, label = -1, header = false)`: consumes a comma-separated text file (gzip
//! when the name ends in `.gz`) and produces `Raw` features (every column but the label
//! column) and labels, remembering each sample's line for error messages. Without a label
//! column (`label: None`, for `nnc predict`), every column is a feature.
//!
//! A byte-order mark and blank lines are skipped; cells are trimmed and may be wrapped in
//! double quotes. Every row needs the first data row's column count; every cell must be a
//! finite number.

use std::path::Path;

use super::formats::read_file;
use super::raw::{Locator, Raw};
use crate::Error;

pub(crate) fn load(path: &Path, label: Option<i64>, header: bool) -> crate::Result<Raw> {
    let file = path.display().to_string();
    let bytes = read_file(path).map_err(|m| Error::data(path, m))?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(Error::data_at(
                path,
                line,
                None,
                format!("{file}:{line}: not UTF-8 text; expected comma-separated numbers"),
            ));
        }
    };
    parse(text.strip_prefix('\u{feff}').unwrap_or(text), &file, label, header)
}

fn parse(text: &str, file: &str, label: Option<i64>, header: bool) -> crate::Result<Raw> {
    let mut columns: Option<(usize, usize)> = None; // (count, label column or usize::MAX)
    let mut first_row = 0;
    let mut header_pending = header;
    let mut header_cols: Option<(usize, usize)> = None; // (columns, line)
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut lines = Vec::new();
    let mut cells: Vec<&str> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let row = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if header_pending {
            header_pending = false;
            header_cols = Some((line.split(',').count(), row));
            continue;
        }
        cells.clear();
        cells.extend(line.split(','));
        let (count, lab) = match columns {
            Some(c) => c,
            None => {
                let count = cells.len();
                let lab = match label {
                    None => usize::MAX as i64,
                    Some(_) if count < 2 => {
                        return Err(Error::data_at(
                            file,
                            row,
                            None,
                            format!("{file}:{row}: found {count} column; expected at least 2 (features and a label)"),
                        ));
                    }
                    Some(label) => {
                        let lab = if label < 0 { count as i64 + label } else { label };
                        if lab < 0 || lab >= count as i64 {
                            return Err(Error::data_at(file, row, None, format!(
                                "{file}:{row}: the label column is {label}, but the rows have {count} columns (0..{} or -1..-{count})",
                                count - 1
                            )));
                        }
                        lab
                    }
                };
                if let Some((h, hrow)) = header_cols {
                    if h != count {
                        return Err(Error::data_at(
                            file,
                            row,
                            None,
                            format!(
                                "{file}:{row}: the header (line {hrow}) names {h} columns but the rows have {count}"
                            ),
                        ));
                    }
                }
                columns = Some((count, lab as usize));
                first_row = row;
                (count, lab as usize)
            }
        };
        if cells.len() != count {
            return Err(Error::data_at(
                file,
                row,
                None,
                format!("{file}:{row}: expected {count} columns (as in row {first_row}), found {}", cells.len()),
            ));
        }
        for (j, cell) in cells.iter().enumerate() {
            let t = cell.trim();
            let t = t.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(t).trim();
            let col = j + 1;
            let v: f64 = match t.parse() {
                Ok(v) => v,
                Err(_) if t.is_empty() => {
                    return Err(Error::data_at(
                        file,
                        row,
                        Some(col),
                        format!("{file}:{row}:{col}: empty value; expected a number"),
                    ));
                }
                Err(_) => {
                    let hint = if !header && lines.is_empty() {
                        " (if this is a header row, write `header = true`)"
                    } else {
                        ""
                    };
                    return Err(Error::data_at(
                        file,
                        row,
                        Some(col),
                        format!("{file}:{row}:{col}: `{t}` is not a number{hint}"),
                    ));
                }
            };
            if !v.is_finite() {
                return Err(Error::data_at(
                    file,
                    row,
                    Some(col),
                    format!("{file}:{row}:{col}: `{t}` is not a finite number (NaN and infinities are not data)"),
                ));
            }
            if j == lab {
                labels.push(v);
            } else {
                let f = v as f32;
                if !f.is_finite() {
                    return Err(Error::data_at(
                        file,
                        row,
                        Some(col),
                        format!("{file}:{row}:{col}: {t} is too large for f32"),
                    ));
                }
                features.push(f);
            }
        }
        lines.push(row);
    }
    let Some((count, lab)) = columns else {
        return Err(Error::data(file, format!("`{file}` is empty: it has no data rows")));
    };
    let labeled = lab != usize::MAX;
    Ok(Raw {
        n: lines.len(),
        features,
        shape: vec![if labeled { count - 1 } else { count }],
        labels: labeled.then_some(labels),
        feature_at: Locator::Lines(file.to_string(), lines.clone()),
        label_at: Locator::Lines(file.to_string(), lines),
    })
}
