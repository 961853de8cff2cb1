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
    let mut s = Scanner {
        b,
        i: 0,
        strings: Vec::new(),
        memo: Default::default(),
    };
    loop {
        let op = *b.get(s.i)?;
        s.i += 1;
        match op {
            b'.' => return Some(s.i),
            // GLOBAL, INST: module and name on two lines.
            b'c' | b'i' => {
                let m = s.line()?;
                let n = s.line()?;
                out.push((m, n));
            }
            // STACK_GLOBAL: module and name are the last two strings pushed.
            0x93 => {
                let n = s.strings.pop().unwrap_or_default();
                let m = s.strings.pop().unwrap_or_default();
                out.push((m, n));
            }
            _ => s.other(op)?,
        }
    }
}

/// The state of one pickle's walk: the position, the strings pushed (what STACK_GLOBAL takes)
/// and the memo of strings (what GET brings back).
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    strings: Vec<String>,
    memo: std::collections::HashMap<u64, String>,
}

impl Scanner<'_> {
    /// Every opcode but STOP and the globals: its argument read or skipped; `None` for an
    /// unknown opcode or a truncated argument.
    fn other(&mut self, op: u8) -> Option<()> {
        match op {
            b'X' | b'T' | b'B' | 0x8c | b'U' | b'C' | 0x8d | 0x8e | 0x96 => {
                let width = match op {
                    b'X' | b'T' | b'B' => 4,
                    0x8c | b'U' | b'C' => 1,
                    _ => 8,
                };
                let n = usize::try_from(self.uint(width)?).ok()?;
                let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                self.strings.push(s);
            }
            b'V' | b'S' => {
                let s = self.line()?;
                self.strings.push(s);
            }
            b'I' | b'L' | b'F' | b'P' | b'p' | b'g' => {
                let s = self.line()?;
                if op == b'p' {
                    if let (Ok(k), Some(v)) = (s.trim().parse(), self.strings.last()) {
                        self.memo.insert(k, v.clone());
                    }
                }
            }
            b'q' | b'r' | 0x94 => {
                let k = match op {
                    b'q' => self.uint(1)?,
                    b'r' => self.uint(4)?,
                    _ => self.memo.len() as u64,
                };
                if let Some(v) = self.strings.last() {
                    self.memo.insert(k, v.clone());
                }
            }
            b'h' | b'j' => {
                let k = self.uint(if op == b'h' { 1 } else { 4 })?;
                if let Some(v) = self.memo.get(&k) {
                    self.strings.push(v.clone());
                }
            }
            b'J' | 0x84 => self.i += 4,
            b'K' | 0x80 | 0x82 => self.i += 1,
            b'M' | 0x83 => self.i += 2,
            b'G' | 0x95 => self.i += 8,
            0x8a | 0x8b => {
                let n = self.uint(if op == 0x8a { 1 } else { 4 })? as usize;
                self.take(n)?;
            }
            b'(' | b'0' | b'1' | b'2' | b'N' | b')' | b']' | b'}' | b'a' | b'e' | b'b' | b'd'
            | b'l' | b'o' | b'R' | b's' | b'u' | b't' | b'Q' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89
            | 0x81 | 0x92 | 0x8f | 0x90 | 0x91 | 0x97 | 0x98 => {}
            _ => return None,
        }
        Some(())
    }

    /// A newline-terminated argument.
    fn line(&mut self) -> Option<String> {
        let rest = self.b.get(self.i..)?;
        let n = rest.iter().position(|&c| c == b'\n')?;
        self.i += n + 1;
        Some(String::from_utf8_lossy(&rest[..n]).into_owned())
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }

    /// A little-endian unsigned integer of `n` bytes.
    fn uint(&mut self, n: usize) -> Option<u64> {
        let s = self.take(n)?;
        Some(
            s.iter()
                .enumerate()
                .fold(0u64, |v, (k, &x)| v | (x as u64) << (8 * k)),
        )
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
