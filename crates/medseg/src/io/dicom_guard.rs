//! DICOM hardening: what is checked before dicom-rs and its decoders see a file's bytes.
//! Each check here answers a fuzzing finding (see `fuzz/README.md`): dicom-rs allocates what a
//! header declares before it reads it, and the JPEG 2000, JPEG and RLE decoders allocate from
//! their own codestream headers, so a small file could ask for gigabytes.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::decode::explicit_le::ExplicitVRLittleEndianDecoder;
use dicom_encoding::decode::{Decode, DecodeFrom};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::error::{Error, Result};

const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const TRANSFER_SYNTAX: Tag = Tag(0x0002, 0x0010);

/// Refuse a file whose elements declare more bytes than the file holds, before dicom-rs
/// reads it: dicom-parser allocates (and zero-fills) a value's declared length before reading
/// it, so a 17 KB file declaring a 2.8 GB value costs 2.8 GB (found by `fuzz/`'s `dicom`
/// target; the same class as GDCM's CVE-2026-3650). This walk reads element headers only, with
/// dicom-rs's own header decoders; where it cannot follow the structure (deflated data sets,
/// a header it cannot decode) it stops and leaves the verdict to dicom-rs.
pub(super) fn check_value_lengths(path: &Path) -> Result<()> {
    let mut walk = Walk::open(path)?;
    let Some(ts_uid) = walk.meta_group()? else {
        return Ok(());
    };
    // No meta group: dicom-rs reads such a data set as implicit VR little endian.
    let ts = TransferSyntaxRegistry.get(ts_uid.as_deref().unwrap_or("1.2.840.10008.1.2"));
    let Some(ts) = ts else { return Ok(()) };
    if matches!(ts.codec(), dicom_encoding::Codec::Dataset(_)) {
        return Ok(()); // deflated: the declared lengths refer to the inflated stream
    }
    match ts.decoder_for::<BufReader<File>>() {
        // Implicit VR little endian is the one syntax without VR bytes in its headers.
        Some(decoder) => walk.data_set(&decoder, ts.uid() != "1.2.840.10008.1.2"),
        None => Ok(()),
    }
}

/// A walk over a file's element headers.
struct Walk<'a> {
    path: &'a Path,
    src: BufReader<File>,
    /// Byte offset of `src`.
    pos: u64,
    size: u64,
}

impl<'a> Walk<'a> {
    /// The file, past the 128-byte preamble and `DICM` when it has them.
    fn open(path: &'a Path) -> Result<Self> {
        super::check_input(path)?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut src = BufReader::new(file);
        let mut magic = [0u8; 132];
        let pos = if src.read_exact(&mut magic).is_ok() && &magic[128..] == b"DICM" {
            132
        } else {
            0
        };
        src.seek(SeekFrom::Start(pos))
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path,
            src,
            pos,
            size,
        })
    }

    fn too_long(&self, tag: Tag, len: u32) -> Error {
        Error::dicom(
            self.path,
            format!(
                "element {tag} at byte {} declares {len} bytes, but only {} remain in the file",
                self.pos,
                self.size.saturating_sub(self.pos)
            ),
        )
    }

    /// The value length of a header just read, checked against what the file still holds.
    fn checked_len(&self, tag: Tag, len: Option<u32>) -> Result<Option<u32>> {
        match len {
            Some(len) if len as u64 > self.size - self.pos => Err(self.too_long(tag, len)),
            _ => Ok(len),
        }
    }

    fn skip(&mut self, len: u32) -> Result<()> {
        self.src
            .seek_relative(len as i64)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += len as u64;
        Ok(())
    }

    /// The file meta group (0002,xxxx), always explicit VR little endian: its transfer syntax
    /// UID (`Some(None)` when the file has no meta group); `None` where the walk stops.
    fn meta_group(&mut self) -> Result<Option<Option<String>>> {
        let meta = ExplicitVRLittleEndianDecoder::default();
        let mut ts_uid = None;
        loop {
            let mut group = [0u8; 2];
            if self.src.read_exact(&mut group).is_err() {
                return Ok(None);
            }
            self.src
                .seek_relative(-2)
                .map_err(|e| Error::io(self.path, e))?;
            if u16::from_le_bytes(group) != 0x0002 {
                return Ok(Some(ts_uid)); // the first data set element
            }
            let Ok((h, n)) = Decode::decode_header(&meta, &mut self.src) else {
                return Ok(None);
            };
            self.pos += n as u64;
            let Some(len) = self.checked_len(h.tag, h.len.get())? else {
                return Ok(None);
            };
            if h.tag == TRANSFER_SYNTAX && len <= 64 {
                let mut uid = vec![0u8; len as usize];
                self.src
                    .read_exact(&mut uid)
                    .map_err(|e| Error::io(self.path, e))?;
                self.pos += len as u64;
                let uid = String::from_utf8_lossy(&uid);
                ts_uid = Some(uid.trim_end_matches(['\0', ' ']).to_string());
            } else {
                self.skip(len)?;
            }
        }
    }

    /// Every header of the data set, in dicom-parser's structure: sequences and items are
    /// stepped into (their content is headers; a defined-length one ends at its length);
    /// inside encapsulated pixel data the items are fragments, skipped as bytes. Anything
    /// dicom-parser would read out of that structure (an element where an item belongs, an
    /// item or sequence delimiter among elements, a container overrun) is refused: there the
    /// two would no longer agree on where the next header starts.
    fn data_set<D>(&mut self, decoder: &D, explicit_vr: bool) -> Result<()>
    where
        D: DecodeFrom<BufReader<File>> + ?Sized,
    {
        let mut open: Vec<Open> = Vec::new();
        let mut in_fragments = false;
        while self.pos < self.size {
            self.close_ended(&mut open)?;
            let Ok((h, n)) = decoder.decode_header(&mut self.src) else {
                return Ok(());
            };
            if explicit_vr && h.vr == VR::UN && h.tag.group() != 0xFFFE {
                self.check_vr_bytes(h.tag, n)?;
            }
            self.pos += n as u64;
            let len = self.checked_len(h.tag, h.len.get())?;
            let end = len.map(|l| self.pos + u64::from(l));
            if in_fragments {
                in_fragments = h.tag != SEQUENCE_END;
                if h.tag != SEQUENCE_END {
                    self.skip(len.unwrap_or(0))?;
                }
                continue;
            }
            let in_sequence = open.last().is_some_and(|o| !o.item);
            match h.tag {
                ITEM if in_sequence => self.enter(&mut open, Open { item: true, end })?,
                SEQUENCE_END if in_sequence => {
                    open.pop();
                }
                _ if in_sequence => return Err(self.out_of_place(h.tag, "an item")),
                ITEM | SEQUENCE_END => return Err(self.out_of_place(h.tag, "an element")),
                ITEM_END => {
                    open.pop(); // as dicom-parser: ignored outside any sequence
                }
                tags::PIXEL_DATA if len.is_none() => in_fragments = true,
                _ if h.vr == VR::SQ || len.is_none() => {
                    self.enter(&mut open, Open { item: false, end })?
                }
                _ => {
                    let len = len.unwrap_or(0);
                    self.check_unit(h.tag, h.vr, len)?;
                    self.skip(len)?;
                }
            }
        }
        self.close_ended(&mut open)
    }

    /// Close the defined-length sequences and items that end here; one that ended before here
    /// (at any depth) was overrun by its content.
    fn close_ended(&self, open: &mut Vec<Open>) -> Result<()> {
        if let Some(end) = open.iter().filter_map(|o| o.end).find(|&e| e < self.pos) {
            return Err(self.overrun(end));
        }
        while open.last().and_then(|o| o.end) == Some(self.pos) {
            open.pop();
        }
        Ok(())
    }

    /// Enter a sequence or item, which must end within every container around it.
    fn enter(&self, open: &mut Vec<Open>, o: Open) -> Result<()> {
        let outer = open.iter().filter_map(|o| o.end).min();
        if let (Some(end), Some(outer)) = (o.end, outer) {
            if end > outer {
                return Err(self.overrun(outer));
            }
        }
        open.push(o);
        Ok(())
    }

    fn overrun(&self, end: u64) -> Error {
        Error::dicom(
            self.path,
            format!(
                "a sequence or item ending at byte {end} is overrun by its content (byte {})",
                self.pos
            ),
        )
    }

    fn out_of_place(&self, tag: Tag, expected: &str) -> Error {
        Error::dicom(
            self.path,
            format!(
                "{tag} at byte {} where {expected} belongs: the data set's sequences are broken",
                self.pos
            ),
        )
    }

    /// An explicit-VR header the decoder read as UN must say `UN`: other bytes (a fuzzed
    /// "\0\0") are no VR, and dicom-parser then reads a shorter header than the decoder does,
    /// so the two disagree on where every later element starts (one such file made dicom-parser
    /// zero-fill 4.28 GB for a "length" the walk read as a tag, three times per read).
    fn check_vr_bytes(&mut self, tag: Tag, header_len: usize) -> Result<()> {
        let back = header_len as i64;
        let mut head = [0u8; 6];
        self.src
            .seek_relative(-back)
            .and_then(|()| self.src.read_exact(&mut head))
            .and_then(|()| self.src.seek_relative(back - 6))
            .map_err(|e| Error::io(self.path, e))?;
        if &head[4..6] == b"UN" {
            return Ok(());
        }
        Err(Error::dicom(
            self.path,
            format!(
                "element {tag} at byte {} has no valid VR ({:?})",
                self.pos,
                String::from_utf8_lossy(&head[4..6])
            ),
        ))
    }

    /// dicom-parser reads `len / unit` numbers but counts `len` bytes, so a binary value of a
    /// length that is not a multiple of its unit shifts every later header (one such shift
    /// read a length of 0xFFFF0000 from pixel data bytes). At the end of the file nothing
    /// follows, so an odd tail there is left to dicom-rs.
    fn check_unit(&self, tag: Tag, vr: VR, len: u32) -> Result<()> {
        let unit = binary_unit(vr);
        if !(len as u64).is_multiple_of(unit) && self.pos + (len as u64) < self.size {
            return Err(Error::dicom(
                self.path,
                format!(
                    "element {tag} ({vr:?}) at byte {} has {len} bytes, not a multiple of {unit}",
                    self.pos
                ),
            ));
        }
        Ok(())
    }
}

/// A sequence (`item: false`) or item the walk is inside; `end` for a defined length.
struct Open {
    item: bool,
    end: Option<u64>,
}

/// Bytes per number of a binary VR (1 for the others).
fn binary_unit(vr: VR) -> u64 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::OL | VR::OF | VR::AT => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

/// Compressed frames are checked before a decoder sees them: an RLE header of at most 15
/// segments (PS3.5 G.5; dicom-rs allocates the header's count first, a fuzzed one asked for
/// 814 MB), and a J2K/JPEG frame size equal to the header's rows × columns.
pub(super) fn check_fragments(
    obj: &DefaultDicomObject,
    path: &Path,
    ts: &str,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let Some(frags) = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.value().fragments())
    else {
        return Ok(());
    };
    for f in frags {
        if ts == "1.2.840.10008.1.2.5" {
            let n = f
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if f.len() < 64 || n.is_none_or(|n| n > 15) {
                return Err(Error::dicom(
                    path,
                    format!(
                        "RLE fragment of {} bytes with {n:?} segments (at most 15, header 64 bytes)",
                        f.len()
                    ),
                ));
            }
        }
        if let Some((w, h, c)) = codestream_size(f) {
            super::check_declared_size(path, &[h, w, c])?;
            if (w, h) != (cols, rows) {
                return Err(Error::dicom(
                    path,
                    format!(
                        "the compressed frame declares {w}x{h} pixels, the DICOM header \
                         {cols}x{rows}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `(width, height, components)` declared by a JPEG 2000 codestream (SIZ) or a JPEG frame
/// header (SOFn) at the start of a pixel data fragment; `None` for anything else. The J2K and
/// JPEG decoders allocate from these, not from the DICOM header (a fuzzed J2K frame inside a
/// small DICOM made openjp2 allocate 640 MB), so they are checked first.
fn codestream_size(f: &[u8]) -> Option<(usize, usize, usize)> {
    let be16 = |i: usize| {
        f.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    };
    let be32 = |i: usize| {
        f.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if f.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) {
        // SOC, SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz
        let (x, y, xo, yo) = (be32(8)?, be32(12)?, be32(16)?, be32(20)?);
        return Some((x.saturating_sub(xo), y.saturating_sub(yo), be16(40)?));
    }
    if f.starts_with(&[0xFF, 0xD8]) {
        // Markers up to the first SOFn (C0-CF but C4 DHT, C8 JPG, CC DAC).
        let mut i = 2;
        while i + 4 <= f.len() {
            if f[i] != 0xFF {
                return None;
            }
            let m = f[i + 1];
            if m == 0xFF {
                i += 1;
                continue;
            }
            if (0xC0..=0xCF).contains(&m) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
                // Lf P Y X Nf
                return Some((be16(i + 7)?, be16(i + 5)?, *f.get(i + 9)? as usize));
            }
            i += 2 + be16(i + 2)?;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::check_value_lengths;

    /// An explicit-VR little-endian file: preamble, `DICM`, the transfer syntax, then `body`.
    fn file(body: &[u8]) -> tempfile::NamedTempFile {
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        let ts = b"1.2.840.10008.1.2.1\0";
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', ts.len() as u8, 0]);
        b.extend_from_slice(ts);
        b.extend_from_slice(body);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &b).unwrap();
        f
    }

    /// An element with a 2-byte length (`vr` of the short form).
    fn el(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = [group.to_le_bytes(), elem.to_le_bytes()].concat();
        v.extend_from_slice(vr);
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    /// A sequence element (`len` None: undefined).
    fn sq(group: u16, elem: u16, len: Option<u32>) -> Vec<u8> {
        let mut v = [group.to_le_bytes(), elem.to_le_bytes()].concat();
        v.extend_from_slice(b"SQ\0\0");
        v.extend_from_slice(&len.unwrap_or(u32::MAX).to_le_bytes());
        v
    }

    /// An (FFFE,xxxx) marker with its length.
    fn marker(elem: u16, len: u32) -> Vec<u8> {
        [0xFFFEu16.to_le_bytes(), elem.to_le_bytes()]
            .concat()
            .into_iter()
            .chain(len.to_le_bytes())
            .collect()
    }

    fn refused(body: Vec<u8>) -> String {
        let f = file(&body);
        check_value_lengths(f.path()).unwrap_err().to_string()
    }

    #[test]
    fn nested_sequences_of_both_length_kinds_pass() {
        let inner = el(0x0008, 0x0100, b"SH", b"ab");
        let body = [
            sq(0x0008, 0x1115, None),
            marker(0xE000, u32::MAX),
            inner.clone(),
            marker(0xE00D, 0),
            marker(0xE0DD, 0),
            sq(0x0008, 0x1140, Some(8 + inner.len() as u32)),
            marker(0xE000, inner.len() as u32),
            inner,
            el(0x0010, 0x0010, b"PN", b"x^"),
        ]
        .concat();
        check_value_lengths(file(&body).path()).unwrap();
    }

    #[test]
    fn what_dicom_parser_would_read_out_of_step_is_refused() {
        let e = refused(el(0x0010, 0x0010, b"\0\0", b"abcd"));
        assert!(
            e.contains("(0010,0010)") && e.contains("no valid VR"),
            "{e}"
        );
        let e = refused([sq(0x0008, 0x1115, None), el(0x0010, 0x0010, b"PN", b"ab")].concat());
        assert!(e.contains("where an item belongs"), "{e}");
        let e = refused([marker(0xE000, 0), el(0x0010, 0x0010, b"PN", b"ab")].concat());
        assert!(
            e.contains("(FFFE,E000)") && e.contains("where an element belongs"),
            "{e}"
        );
        let inner = el(0x0008, 0x0100, b"SH", b"abcd");
        let body = [sq(0x0008, 0x1140, Some(8)), marker(0xE000, 12), inner].concat();
        let e = refused(body);
        assert!(e.contains("overrun"), "{e}");
    }
}
