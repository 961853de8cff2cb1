//! A checkpoint is a pickle, and a pickle can name any Python callable (GLOBAL + REDUCE).
//! medseg's reader never calls anything, but a checkpoint that names callables other than
//! PyTorch's tensor rebuilders is hostile or not a state_dict, so it is refused up front:
//! this module walks the pickle opcodes and lists every global it references.

/// Every `(module, name)` a pickle stream references through GLOBAL, INST or STACK_GLOBAL,
/// reading consecutive pickles until the data stops being a pickle.
pub fn globals(bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match scan_one(&bytes[pos..], &mut out) {
            Some(n) if n > 0 => pos += n,
            _ => break,
        }
    }
    out
}

/// Scan one pickle; returns its length (through STOP) or `None` if it is not a pickle.
fn scan_one(b: &[u8], out: &mut Vec<(String, String)>) -> Option<usize> {
    let mut i = 0;
    let mut strings: Vec<String> = Vec::new(); // recent string pushes, for STACK_GLOBAL
    let mut memo: std::collections::HashMap<u64, String> = Default::default();
    let line = |i: &mut usize| -> Option<String> {
        let rest = b.get(*i..)?;
        let n = rest.iter().position(|&c| c == b'\n')?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        *i += n + 1;
        Some(s)
    };
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = b.get(*i..i.checked_add(n)?)?;
        *i += n;
        Some(s)
    };
    let uint = |i: &mut usize, n: usize| -> Option<u64> {
        let s = take(i, n)?;
        let mut v = 0u64;
        for (k, &x) in s.iter().enumerate() {
            v |= (x as u64) << (8 * k);
        }
        Some(v)
    };
    loop {
        let op = *b.get(i)?;
        i += 1;
        match op {
            b'.' => return Some(i),
            b'c' | b'i' => {
                let m = line(&mut i)?;
                let n = line(&mut i)?;
                out.push((m, n));
            }
            0x93 => {
                let n = strings.pop().unwrap_or_default();
                let m = strings.pop().unwrap_or_default();
                out.push((m, n));
            }
            b'X' | b'T' | b'B' => {
                let n = uint(&mut i, 4)? as usize;
                let s = take(&mut i, n)?;
                strings.push(String::from_utf8_lossy(s).into_owned());
            }
            0x8c | b'U' | b'C' => {
                let n = uint(&mut i, 1)? as usize;
                let s = take(&mut i, n)?;
                strings.push(String::from_utf8_lossy(s).into_owned());
            }
            0x8d | 0x8e | 0x96 => {
                let n = usize::try_from(uint(&mut i, 8)?).ok()?;
                let s = take(&mut i, n)?;
                strings.push(String::from_utf8_lossy(s).into_owned());
            }
            b'V' | b'S' => {
                let s = line(&mut i)?;
                strings.push(s);
            }
            b'I' | b'L' | b'F' | b'P' | b'p' | b'g' => {
                let s = line(&mut i)?;
                if op == b'p' {
                    if let (Ok(k), Some(v)) = (s.trim().parse(), strings.last()) {
                        memo.insert(k, v.clone());
                    }
                }
            }
            b'q' | b'r' | 0x94 => {
                let k = match op {
                    b'q' => uint(&mut i, 1)?,
                    b'r' => uint(&mut i, 4)?,
                    _ => memo.len() as u64,
                };
                if let Some(v) = strings.last() {
                    memo.insert(k, v.clone());
                }
            }
            b'h' | b'j' => {
                let k = uint(&mut i, if op == b'h' { 1 } else { 4 })?;
                if let Some(v) = memo.get(&k) {
                    strings.push(v.clone());
                }
            }
            b'J' => i += 4,
            b'K' | 0x80 | 0x82 => i += 1,
            b'M' | 0x83 => i += 2,
            b'G' | 0x95 => i += 8,
            0x84 => i += 4,
            0x8a => {
                let n = uint(&mut i, 1)? as usize;
                take(&mut i, n)?;
            }
            0x8b => {
                let n = uint(&mut i, 4)? as usize;
                take(&mut i, n)?;
            }
            b'(' | b'0' | b'1' | b'2' | b'N' | b')' | b']' | b'}' | b'a' | b'e' | b'b' | b'd'
            | b'l' | b'o' | b'R' | b's' | b'u' | b't' | b'Q' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89
            | 0x81 | 0x92 | 0x8f | 0x90 | 0x91 | 0x97 | 0x98 => {}
            _ => return None,
        }
    }
}

/// Whether a global is one a PyTorch state_dict needs (the tensor rebuilders, storage types,
/// dtypes, `OrderedDict`), as PyTorch's own `weights_only` unpickler allows.
pub fn is_allowed(module: &str, name: &str) -> bool {
    match module {
        "collections" => name == "OrderedDict",
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
        ),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch" => {
            name.ends_with("Storage")
                || matches!(
                    name,
                    "Size"
                        | "device"
                        | "float32"
                        | "float64"
                        | "float16"
                        | "bfloat16"
                        | "int64"
                        | "int32"
                        | "int16"
                        | "int8"
                        | "uint8"
                        | "bool"
                )
        }
        "torch.storage" => matches!(name, "UntypedStorage" | "TypedStorage" | "_load_from_bytes"),
        _ => false,
    }
}
