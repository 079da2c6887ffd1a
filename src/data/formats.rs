//! Binary formats: consumes IDX (MNIST), `.npy`, `.npz` and safetensors files (any of them
//! gzipped) and produces `Raw` features + labels (IDX, an npy pair) or named `NdArray`s
//! (npz, safetensors), values widened to f64.
//!
//! - IDX: magic `00 00 <type> <ndim>`, big-endian u32 dimensions, then the data; types u8
//!   (images scaled by 1/255 to [0, 1]), i8, i16, i32, f32, f64. The images file needs at
//!   least 2 dimensions, the labels file 1 (or `[n, 1]`), with the same count.
//! - `.npy` versions 1-3: dtypes `f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1`, either byte order,
//!   C or Fortran order.
//! - `.npz`: a zip of `.npy` files read by hand (stored or deflated entries, zip64).
//! - safetensors: through the `safetensors` crate; float, integer and bool dtypes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::raw::{Locator, NdArray, Raw};

/// Reads a whole file, gunzipping it when the name ends in `.gz` or the data starts with
/// the gzip magic bytes. Only regular files are read (a FIFO would block, a device never
/// end), and neither the file nor its gunzipped contents may exceed
/// `limits::MAX_DATA_BYTES`.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let file = path.display();
    let limit = crate::limits::MAX_DATA_BYTES;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{file}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("cannot read `{file}`: it is not a regular file (a folder, FIFO or device)"));
    }
    if meta.len() > limit {
        return Err(format!("`{file}` is {} bytes; the limit for a data file is {limit} bytes", meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{file}`: {e}"))?;
    let named_gz = path.extension().is_some_and(|e| e == "gz");
    let magic_gz = bytes.starts_with(&[0x1f, 0x8b]);
    if !(named_gz || magic_gz) {
        return Ok(bytes);
    }
    if !magic_gz {
        return Err(format!("`{file}` ends in .gz but is not gzip data (it does not start with bytes 1f 8b)"));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("`{file}`: bad gzip data: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("`{file}` gunzips to more than {limit} bytes, the limit for a data file"));
    }
    Ok(out)
}

/// Element types of the binary formats.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Elem {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::Bool | Elem::U8 | Elem::I8 => 1,
            Elem::U16 | Elem::I16 | Elem::F16 | Elem::BF16 => 2,
            Elem::U32 | Elem::I32 | Elem::F32 => 4,
            Elem::U64 | Elem::I64 | Elem::F64 => 8,
        }
    }
}

fn half_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Decodes `bytes` (a whole number of elements) into f64 values.
fn decode(bytes: &[u8], elem: Elem, little: bool, out: &mut Vec<f64>) {
    let size = elem.size();
    out.reserve(bytes.len() / size);
    for c in bytes.chunks_exact(size) {
        let mut b = [0u8; 8];
        if little {
            b[..size].copy_from_slice(c);
        } else {
            for (k, &x) in c.iter().rev().enumerate() {
                b[k] = x;
            }
        }
        let u16v = u16::from_le_bytes([b[0], b[1]]);
        let u32v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let u64v = u64::from_le_bytes(b);
        out.push(match elem {
            Elem::Bool => f64::from(u8::from(b[0] != 0)),
            Elem::U8 => f64::from(b[0]),
            Elem::I8 => f64::from(b[0] as i8),
            Elem::U16 => f64::from(u16v),
            Elem::I16 => f64::from(u16v as i16),
            Elem::U32 => f64::from(u32v),
            Elem::I32 => f64::from(u32v as i32),
            Elem::U64 => u64v as f64,
            Elem::I64 => u64v as i64 as f64,
            Elem::F16 => half_to_f64(u16v),
            Elem::BF16 => f64::from(f32::from_bits(u32::from(u16v) << 16)),
            Elem::F32 => f64::from(f32::from_bits(u32v)),
            Elem::F64 => f64::from_bits(u64v),
        });
    }
}

fn checked_count(shape: &[usize], file: &str) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&c| c <= (1usize << 40))
        .ok_or_else(|| format!("`{file}`: shape {shape:?} is too large"))
}

// ---------------------------------------------------------------------------------------
// IDX

struct Idx {
    dims: Vec<usize>,
    values: Vec<f64>,
    elem: Elem,
    magic: u32,
}

fn parse_idx(bytes: &[u8], file: &str) -> Result<Idx, String> {
    let Some(head) = bytes.get(..4) else {
        return Err(format!(
            "`{file}` is not an IDX file: it has {} bytes, fewer than the 4-byte magic number",
            bytes.len()
        ));
    };
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if head[0] != 0 || head[1] != 0 {
        return Err(format!(
            "`{file}` is not an IDX file: expected a magic number 0x0000TTNN (e.g. 0x00000803 for images, 0x00000801 for labels), found 0x{magic:08x}"
        ));
    }
    let elem = match head[2] {
        0x08 => Elem::U8,
        0x09 => Elem::I8,
        0x0B => Elem::I16,
        0x0C => Elem::I32,
        0x0D => Elem::F32,
        0x0E => Elem::F64,
        t => {
            return Err(format!(
                "`{file}`: magic number 0x{magic:08x} names IDX type 0x{t:02x}; expected 08 (u8), 09, 0B, 0C, 0D or 0E"
            ))
        }
    };
    let ndim = usize::from(head[3]);
    if ndim == 0 {
        return Err(format!("`{file}`: magic number 0x{magic:08x} gives 0 dimensions; expected at least 1"));
    }
    let header = 4 + 4 * ndim;
    let Some(dim_bytes) = bytes.get(4..header) else {
        return Err(format!(
            "`{file}`: the header needs {header} bytes for {ndim} dimensions, but the file has {}",
            bytes.len()
        ));
    };
    let dims: Vec<usize> =
        dim_bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let count = checked_count(&dims, file)?;
    let want = count * elem.size();
    let found = bytes.len() - header;
    if found != want {
        return Err(format!(
            "`{file}`: the header gives shape {dims:?}, which needs {want} bytes of data, but {found} follow the header"
        ));
    }
    let mut values = Vec::new();
    decode(&bytes[header..], elem, false, &mut values);
    Ok(Idx { dims, values, elem, magic })
}

pub(crate) fn load_idx(images: &Path, labels: Option<&Path>) -> Result<Raw, String> {
    let ifile = images.display().to_string();
    let im = parse_idx(&read_file(images)?, &ifile)?;
    if im.dims.len() < 2 {
        return Err(format!(
            "`{ifile}`: expected images (magic 0x00000803, at least 2 dimensions), found a {}-dimensional IDX file (magic 0x{:08x}); are `images` and `labels` swapped?",
            im.dims.len(),
            im.magic
        ));
    }
    let n = im.dims[0];
    let (lb, lfile) = match labels {
        None => (None, ifile.clone()),
        Some(labels) => {
            let lfile = labels.display().to_string();
            let lb = parse_idx(&read_file(labels)?, &lfile)?;
            if lb.dims.len() != 1 && !(lb.dims.len() == 2 && lb.dims[1] == 1) {
                return Err(format!(
                    "`{lfile}`: expected labels (magic 0x00000801, 1 dimension), found shape {:?} (magic 0x{:08x})",
                    lb.dims, lb.magic
                ));
            }
            if lb.dims[0] != n {
                return Err(format!("`{ifile}` has {n} images but `{lfile}` has {} labels", lb.dims[0]));
            }
            (Some(lb.values), lfile)
        }
    };
    if n == 0 {
        return Err(format!("`{ifile}` has no images"));
    }
    let scale = if im.elem == Elem::U8 { 1.0 / 255.0 } else { 1.0 };
    let features = im.values.iter().map(|&v| (v * scale) as f32).collect();
    Ok(Raw {
        n,
        features,
        shape: im.dims[1..].to_vec(),
        labels: lb,
        feature_at: Locator::Samples(ifile),
        label_at: Locator::Samples(lfile),
    })
}

// ---------------------------------------------------------------------------------------
// .npy

/// Parses a `.npy` file's bytes.
pub(crate) fn parse_npy(bytes: &[u8], file: &str) -> Result<NdArray, String> {
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err(format!("`{file}` is not a .npy file: it does not start with the bytes \\x93NUMPY"));
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => match bytes.get(8..12) {
            Some(b) => (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12),
            None => return Err(format!("`{file}`: truncated .npy header")),
        },
        v => return Err(format!("`{file}`: .npy format version {v} is not supported (expected 1, 2 or 3)")),
    };
    let Some(hbytes) = bytes.get(start..start + hlen) else {
        return Err(format!("`{file}`: the .npy header says {hlen} bytes but the file is shorter"));
    };
    let header = String::from_utf8_lossy(hbytes);
    let descr = dict_value(&header, "descr")
        .and_then(quoted)
        .ok_or_else(|| format!("`{file}`: the .npy header has no 'descr': {}", header.trim()))?;
    let fortran = match dict_value(&header, "fortran_order") {
        Some(v) if v.starts_with("True") => true,
        Some(v) if v.starts_with("False") => false,
        _ => return Err(format!("`{file}`: the .npy header has no 'fortran_order': {}", header.trim())),
    };
    let shape = dict_value(&header, "shape")
        .and_then(parse_tuple)
        .ok_or_else(|| format!("`{file}`: the .npy header has no readable 'shape': {}", header.trim()))?;
    let (little, elem) = npy_dtype(&descr).ok_or_else(|| {
        format!(
            "`{file}`: dtype '{descr}' is not supported; expected a float, integer or bool dtype (e.g. '<f4', '<i8')"
        )
    })?;
    let count = checked_count(&shape, file)?;
    let data = &bytes[start + hlen..];
    let want = count * elem.size();
    if data.len() != want {
        return Err(format!(
            "`{file}`: shape {shape:?} of '{descr}' needs {want} bytes of data, but {} follow the header",
            data.len()
        ));
    }
    let mut values = Vec::new();
    decode(data, elem, little, &mut values);
    if fortran && shape.len() > 1 {
        values = fortran_to_c(&values, &shape);
    }
    Ok(NdArray { shape, values })
}

/// The text after `'key':` in a Python dict literal.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat1 = format!("'{key}'");
    let pat2 = format!("\"{key}\"");
    let pos = header.find(&pat1).or_else(|| header.find(&pat2))?;
    let rest = &header[pos + pat1.len()..];
    let rest = rest.trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

fn quoted(v: &str) -> Option<String> {
    let q = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let rest = &v[1..];
    let end = rest.find(q)?;
    Some(rest[..end].to_string())
}

fn parse_tuple(v: &str) -> Option<Vec<usize>> {
    let inner = v.strip_prefix('(')?;
    let end = inner.find(')')?;
    inner[..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().ok())
        .collect()
}

fn npy_dtype(descr: &str) -> Option<(bool, Elem)> {
    let mut chars = descr.chars();
    let order = chars.next()?;
    let little = match order {
        '<' | '|' | '=' => true,
        '>' => false,
        _ => return None,
    };
    let elem = match chars.as_str() {
        "b1" => Elem::Bool,
        "u1" => Elem::U8,
        "u2" => Elem::U16,
        "u4" => Elem::U32,
        "u8" => Elem::U64,
        "i1" => Elem::I8,
        "i2" => Elem::I16,
        "i4" => Elem::I32,
        "i8" => Elem::I64,
        "f2" => Elem::F16,
        "f4" => Elem::F32,
        "f8" => Elem::F64,
        _ => return None,
    };
    Some((little, elem))
}

/// Column-major (Fortran) values of `shape` to row-major.
fn fortran_to_c(values: &[f64], shape: &[usize]) -> Vec<f64> {
    let nd = shape.len();
    let mut fstride = vec![1usize; nd];
    for k in 1..nd {
        fstride[k] = fstride[k - 1] * shape[k - 1];
    }
    let mut out = Vec::with_capacity(values.len());
    let mut idx = vec![0usize; nd];
    for _ in 0..values.len() {
        let off: usize = idx.iter().zip(&fstride).map(|(i, s)| i * s).sum();
        out.push(values.get(off).copied().unwrap_or(0.0));
        for k in (0..nd).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

pub(crate) fn load_npy_pair(features: &Path, labels: Option<&Path>) -> Result<Raw, String> {
    let ffile = features.display().to_string();
    let f = parse_npy(&read_file(features)?, &ffile)?;
    let Some(&n) = f.shape.first() else {
        return Err(format!("`{ffile}` holds a scalar; expected an array of shape [n, ...] (samples first)"));
    };
    let (l, lfile) = match labels {
        None => (None, ffile.clone()),
        Some(labels) => {
            let lfile = labels.display().to_string();
            let l = parse_npy(&read_file(labels)?, &lfile)?;
            let labels_ok = matches!(l.shape.as_slice(), [_] | [_, 1]);
            if !labels_ok {
                return Err(format!("`{lfile}`: expected labels of shape [n] or [n, 1], found {:?}", l.shape));
            }
            if l.shape[0] != n {
                return Err(format!("`{ffile}` has {n} samples but `{lfile}` has {} labels", l.shape[0]));
            }
            (Some(l.values), lfile)
        }
    };
    if n == 0 {
        return Err(format!("`{ffile}` has no samples"));
    }
    let per = f.shape[1..].iter().product::<usize>();
    let loc = Locator::Samples(ffile.clone());
    let mut features = Vec::with_capacity(f.values.len());
    for (idx, &v) in f.values.iter().enumerate() {
        let x = v as f32;
        if !x.is_finite() {
            return Err(format!(
                "{}: value {} is {v}; expected a finite f32 number",
                loc.at(idx / per.max(1)),
                idx % per.max(1) + 1
            ));
        }
        features.push(x);
    }
    Ok(Raw { n, features, shape: f.shape[1..].to_vec(), labels: l, feature_at: loc, label_at: Locator::Samples(lfile) })
}

// ---------------------------------------------------------------------------------------
// .npz (zip)

fn field(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}
fn le16(b: &[u8], at: usize) -> Option<u64> {
    field(b, at, 2).map(|s| u64::from(u16::from_le_bytes([s[0], s[1]])))
}
fn le32(b: &[u8], at: usize) -> Option<u64> {
    field(b, at, 4).map(|s| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    field(b, at, 8).map(|s| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
}

/// The entries of a zip archive: (name, uncompressed bytes).
fn read_zip(bytes: &[u8], file: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let bad = |what: &str| format!("`{file}` is not a valid .npz (zip) file: {what}");
    const EOCD: u64 = 0x0605_4b50;
    let lowest = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (lowest..=bytes.len().saturating_sub(22))
        .rev()
        .find(|&i| le32(bytes, i) == Some(EOCD))
        .ok_or_else(|| bad("no end-of-central-directory record"))?;
    let trunc = || bad("truncated");
    let mut count = le16(bytes, eocd + 10).ok_or_else(trunc)?;
    let mut cd_off = le32(bytes, eocd + 16).ok_or_else(trunc)?;
    if count == 0xFFFF || cd_off == 0xFFFF_FFFF {
        // zip64: the locator sits just before the end record.
        let loc = eocd.checked_sub(20).ok_or_else(trunc)?;
        if le32(bytes, loc) != Some(0x0706_4b50) {
            return Err(bad("missing zip64 locator"));
        }
        let z = le64(bytes, loc + 8).ok_or_else(trunc)? as usize;
        if le32(bytes, z) != Some(0x0606_4b50) {
            return Err(bad("missing zip64 end record"));
        }
        count = le64(bytes, z + 32).ok_or_else(trunc)?;
        cd_off = le64(bytes, z + 48).ok_or_else(trunc)?;
    }
    let mut p = usize::try_from(cd_off).map_err(|_| trunc())?;
    let mut out = Vec::new();
    for _ in 0..count {
        if le32(bytes, p) != Some(0x0201_4b50) {
            return Err(bad("bad central directory entry"));
        }
        let flags = le16(bytes, p + 8).ok_or_else(trunc)?;
        let method = le16(bytes, p + 10).ok_or_else(trunc)?;
        let mut csize = le32(bytes, p + 20).ok_or_else(trunc)?;
        let mut usize_ = le32(bytes, p + 24).ok_or_else(trunc)?;
        let name_len = le16(bytes, p + 28).ok_or_else(trunc)? as usize;
        let extra_len = le16(bytes, p + 30).ok_or_else(trunc)? as usize;
        let comment_len = le16(bytes, p + 32).ok_or_else(trunc)? as usize;
        let mut local = le32(bytes, p + 42).ok_or_else(trunc)?;
        let name_bytes = bytes.get(p + 46..p + 46 + name_len).ok_or_else(trunc)?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let extra = bytes.get(p + 46 + name_len..p + 46 + name_len + extra_len).ok_or_else(trunc)?;
        // zip64 extended sizes: present in this order for each field saturated above.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = le16(extra, e).unwrap_or(0);
            let len = le16(extra, e + 2).unwrap_or(0) as usize;
            if id == 1 {
                let mut q = e + 4;
                for field in [&mut usize_, &mut csize, &mut local] {
                    if *field == 0xFFFF_FFFF {
                        *field = le64(extra, q).ok_or_else(trunc)?;
                        q += 8;
                    }
                }
            }
            e += 4 + len;
        }
        p += 46 + name_len + extra_len + comment_len;
        if name.ends_with('/') {
            continue;
        }
        if flags & 1 != 0 {
            return Err(format!("`{file}`: entry `{name}` is encrypted"));
        }
        let local = usize::try_from(local).map_err(|_| trunc())?;
        if le32(bytes, local) != Some(0x0403_4b50) {
            return Err(bad(&format!("bad local header for `{name}`")));
        }
        let lname = le16(bytes, local + 26).ok_or_else(trunc)? as usize;
        let lextra = le16(bytes, local + 28).ok_or_else(trunc)? as usize;
        let start = local + 30 + lname + lextra;
        let csize = usize::try_from(csize).map_err(|_| trunc())?;
        let data = bytes
            .get(start..start.saturating_add(csize))
            .ok_or_else(|| bad(&format!("entry `{name}` is truncated")))?;
        let content = match method {
            0 => data.to_vec(),
            8 => {
                let mut v = Vec::new();
                flate2::read::DeflateDecoder::new(data)
                    .take(usize_.saturating_add(1))
                    .read_to_end(&mut v)
                    .map_err(|e| format!("`{file}`: entry `{name}`: bad deflate data: {e}"))?;
                v
            }
            m => {
                return Err(format!(
                    "`{file}`: entry `{name}` uses zip compression method {m}; only stored (0) and deflate (8) are supported"
                ))
            }
        };
        if content.len() as u64 != usize_ {
            return Err(format!("`{file}`: entry `{name}` should hold {usize_} bytes but holds {}", content.len()));
        }
        out.push((name, content));
    }
    Ok(out)
}

pub(crate) fn load_npz(path: &Path) -> Result<BTreeMap<String, NdArray>, String> {
    let file = path.display().to_string();
    let bytes = read_file(path)?;
    let mut out = BTreeMap::new();
    for (name, content) in read_zip(&bytes, &file)? {
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let a = parse_npy(&content, &format!("{file}: {name}"))?;
        out.insert(key, a);
    }
    if out.is_empty() {
        return Err(format!("`{file}` holds no arrays"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// safetensors

pub(crate) fn load_safetensors(path: &Path) -> Result<BTreeMap<String, NdArray>, String> {
    use safetensors::Dtype;
    let file = path.display().to_string();
    let bytes = read_file(path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{file}` is not a valid safetensors file: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let elem = match view.dtype() {
            Dtype::BOOL => Elem::Bool,
            Dtype::U8 => Elem::U8,
            Dtype::U16 => Elem::U16,
            Dtype::U32 => Elem::U32,
            Dtype::U64 => Elem::U64,
            Dtype::I8 => Elem::I8,
            Dtype::I16 => Elem::I16,
            Dtype::I32 => Elem::I32,
            Dtype::I64 => Elem::I64,
            Dtype::F16 => Elem::F16,
            Dtype::BF16 => Elem::BF16,
            Dtype::F32 => Elem::F32,
            Dtype::F64 => Elem::F64,
            other => {
                return Err(format!(
                    "`{file}`: tensor `{name}` has dtype {other:?}; expected a float, integer or bool dtype"
                ))
            }
        };
        let mut values = Vec::new();
        decode(view.data(), elem, true, &mut values);
        out.insert(name, NdArray { shape: view.shape().to_vec(), values });
    }
    if out.is_empty() {
        return Err(format!("`{file}` holds no tensors"));
    }
    Ok(out)
}
