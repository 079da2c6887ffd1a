//! Named tensors on disk: safetensors files (parameters, inputs, gradients, checkpoints).
//!
//! `read` accepts F32, F64 and I32 tensors (others are errors naming the tensor);
//! `write` stores F32 or F64 for floats and I32 for ids, atomically (a temporary file in
//! the same folder, then a rename), so an interrupted write never leaves a torn file.

use std::collections::BTreeMap;
use std::path::Path;

/// One tensor: float data is kept in f64 in memory (f32 files convert exactly).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f64>),
    F64(Vec<f64>),
    I32(Vec<i32>),
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f64>) -> HostTensor {
        HostTensor { shape, data: HostData::F32(data) }
    }
    pub fn dtype_name(&self) -> &'static str {
        match self.data {
            HostData::F32(_) => "f32",
            HostData::F64(_) => "f64",
            HostData::I32(_) => "i32",
        }
    }
    pub fn floats(&self) -> Option<&[f64]> {
        match &self.data {
            HostData::F32(v) | HostData::F64(v) => Some(v),
            HostData::I32(_) => None,
        }
    }
}

pub type TensorMap = BTreeMap<String, HostTensor>;

/// Reads every tensor of a safetensors file. Errors name the file (and the tensor).
pub fn read(path: &Path) -> Result<TensorMap, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("cannot read `{}`: it is not a regular file (a folder, FIFO or device)", path.display()));
    }
    if meta.len() > crate::limits::MAX_DATA_BYTES {
        return Err(format!(
            "`{}` is {} bytes; the limit for a tensor file is {} bytes",
            path.display(),
            meta.len(),
            crate::limits::MAX_DATA_BYTES
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("`{}` is not a valid safetensors file: {e}", path.display()))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let data = match view.dtype() {
            safetensors::Dtype::F32 => HostData::F32(
                raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
            ),
            safetensors::Dtype::F64 => HostData::F64(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            safetensors::Dtype::I32 => {
                HostData::I32(raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
            // Int8 (quantized weights, small ids): widened losslessly.
            safetensors::Dtype::I8 => HostData::I32(raw.iter().map(|&b| i32::from(b as i8)).collect()),
            safetensors::Dtype::I64 => {
                let mut v = Vec::with_capacity(raw.len() / 8);
                for (i, c) in raw.chunks_exact(8).enumerate() {
                    let x = i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                    v.push(i32::try_from(x).map_err(|_| {
                        format!(
                            "`{}`: tensor `{name}` element {i} is {x}, outside the i32 range nnc computes in",
                            path.display()
                        )
                    })?);
                }
                HostData::I32(v)
            }
            other => {
                return Err(format!(
                    "`{}`: tensor `{name}` has element type {other:?}; nnc reads F32, F64, I8, I32 and I64",
                    path.display()
                ))
            }
        };
        out.insert(name, HostTensor { shape, data });
    }
    Ok(out)
}

/// Serializes tensors (sorted by name) with optional string metadata.
pub fn to_bytes(tensors: &TensorMap, metadata: Option<BTreeMap<String, String>>) -> Result<Vec<u8>, String> {
    to_bytes_with(tensors, metadata, &std::collections::BTreeSet::new())
}

/// `to_bytes`, with the integer tensors named in `int8` stored as I8 (each value must
/// fit).
pub fn to_bytes_with(
    tensors: &TensorMap,
    metadata: Option<BTreeMap<String, String>>,
    int8: &std::collections::BTreeSet<String>,
) -> Result<Vec<u8>, String> {
    let mut bufs: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let (dtype, bytes): (safetensors::Dtype, Vec<u8>) = match &t.data {
            HostData::I32(v) if int8.contains(name) => {
                let mut b = Vec::with_capacity(v.len());
                for (i, &x) in v.iter().enumerate() {
                    let y = i8::try_from(x).map_err(|_| format!("tensor `{name}` element {i} is {x}, not an int8"))?;
                    b.push(y as u8);
                }
                (safetensors::Dtype::I8, b)
            }
            HostData::F32(v) => (safetensors::Dtype::F32, v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()),
            HostData::F64(v) => (safetensors::Dtype::F64, v.iter().flat_map(|&x| x.to_le_bytes()).collect()),
            HostData::I32(v) => (safetensors::Dtype::I32, v.iter().flat_map(|&x| x.to_le_bytes()).collect()),
        };
        bufs.push((name.clone(), dtype, t.shape.clone(), bytes));
    }
    let mut views = Vec::new();
    for (name, dtype, shape, bytes) in &bufs {
        let v = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        views.push((name.clone(), v));
    }
    let meta = metadata.map(|m| m.into_iter().collect());
    safetensors::serialize(views, meta).map_err(|e| format!("cannot serialize tensors: {e}"))
}

/// Writes a safetensors file atomically: a temporary file beside it, then a rename.
pub fn write(path: &Path, tensors: &TensorMap, metadata: Option<BTreeMap<String, String>>) -> Result<(), String> {
    let bytes = to_bytes(tensors, metadata)?;
    write_atomic(path, &bytes)
}

/// Writes bytes to `path` through a temporary file beside it, flushed to disk, then a
/// rename, so a reader never sees a half-written file and a failed write leaves the old
/// file as it was. Only regular files are replaced: a symlink is followed and its target
/// written the same way; a FIFO, a device node, a socket or a folder is refused (renaming
/// over `/dev/full` would replace the device). Errors name `path`, never the temporary
/// file, which is removed on any failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let shown = path.display();
    let mut target = path.to_path_buf();
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_symlink() {
            target = std::fs::canonicalize(path).map_err(|e| {
                format!("cannot write `{shown}`: it is a symlink whose target cannot be resolved ({e})")
            })?;
        }
    }
    if let Ok(md) = std::fs::metadata(&target) {
        if !md.is_file() {
            return Err(format!(
                "cannot write `{shown}`: it is {}, not a regular file; nnc writes only regular files (or new paths)",
                file_kind(&md)
            ));
        }
    }
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)?;
        // The rename itself reaches the disk with the folder's entry.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write `{shown}`: {e}")
    })
}

/// What the temporary files of `write_atomic` have between the final name and the pid.
const TEMP_MARK: &str = ".tmp";

fn file_kind(md: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = md.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if md.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// Removes the temporary files that a killed process left in `dir` (`.NAME.tmpPID` of a
/// pid that no longer runs). Best effort: what cannot be removed stays.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with('.') {
            continue;
        }
        let Some(pos) = name.rfind(TEMP_MARK) else { continue };
        let Ok(pid) = name[pos + TEMP_MARK.len()..].parse::<u32>() else { continue };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
