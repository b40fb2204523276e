//! The compact in-memory encodings Redis saves as one RDB string: listpack (7.0+), ziplist
//! (before 7.0) and intset. Each is walked in place, element by element.
//!
//! It must never index out of bounds or loop forever on a malformed blob: every length is
//! checked against the blob before it is used, and errors say what was malformed.

/// One element of a listpack or ziplist: Redis stores integer-looking strings as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackedItem<'a> {
    Bytes(&'a [u8]),
    Int(i64),
}

impl PackedItem<'_> {
    /// The element as the bytes a client would see.
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        match self {
            Self::Bytes(bytes) => bytes.to_vec(),
            Self::Int(n) => n.to_string().into_bytes(),
        }
    }

    /// The element as an integer (stream listpacks store their counters and ids this way).
    pub(crate) fn as_int(self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(n),
            Self::Bytes(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        }
    }

    /// The element as a score (sorted-set listpacks and ziplists store scores as elements).
    pub(crate) fn as_score(self) -> Option<f64> {
        match self {
            // Scores that are whole numbers are stored as integers; i64 → f64 is what Redis does.
            #[allow(clippy::cast_precision_loss)]
            Self::Int(n) => Some(n as f64),
            Self::Bytes(bytes) => parse_score(bytes),
        }
    }
}

/// Parses a score as Redis writes it (`inf`, `-inf`, or a decimal).
fn parse_score(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    match text {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

type Step<'a> = Option<Result<PackedItem<'a>, &'static str>>;

/// Bytes `at..at+n` of `data`, or an error naming `what`.
fn slice<'a>(
    data: &'a [u8],
    at: usize,
    n: usize,
    what: &'static str,
) -> Result<&'a [u8], &'static str> {
    at.checked_add(n)
        .and_then(|end| data.get(at..end))
        .ok_or(what)
}

/// Sign-extends the low `bits` bits of `raw`.
fn sign_extend(raw: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((raw << shift) as i64) >> shift
}

fn le_uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// What tells listpacks and ziplists apart: both are a total size, a header, entries and an
/// end byte 0xff; they differ in the header's length and in how an entry is encoded.
pub(crate) trait PackedFormat {
    /// Header bytes (total size first).
    const HEADER: usize;
    /// The header's length check and end-byte errors, in this format's name.
    const SHORT_HEADER: &'static str;
    const WRONG_SIZE: &'static str;
    const NO_END: &'static str;
    const BYTES_AFTER_END: &'static str;

    /// The entry at `pos` (not the end byte) and where the next one starts.
    fn entry(data: &[u8], pos: usize, first: u8) -> Result<(PackedItem<'_>, usize), &'static str>;
}

/// The elements of a listpack or a ziplist, checked as they are read.
#[derive(Debug)]
pub(crate) struct Packed<'a, F> {
    data: &'a [u8],
    pos: usize,
    done: bool,
    format: std::marker::PhantomData<F>,
}

/// The elements of a listpack.
pub(crate) type Listpack<'a> = Packed<'a, ListpackFormat>;
/// The elements of a ziplist (the encoding before listpack, in RDBs from Redis 6 and older).
pub(crate) type Ziplist<'a> = Packed<'a, ZiplistFormat>;

impl<'a, F: PackedFormat> Packed<'a, F> {
    /// Checks the header's total size and positions on the first element.
    pub(crate) fn new(data: &'a [u8]) -> Result<Self, &'static str> {
        let header = slice(data, 0, F::HEADER, F::SHORT_HEADER)?;
        if le_uint(&header[..4]) != data.len() as u64 {
            return Err(F::WRONG_SIZE);
        }
        Ok(Self {
            data,
            pos: F::HEADER,
            done: false,
            format: std::marker::PhantomData,
        })
    }

    fn step(&mut self) -> Result<Option<PackedItem<'a>>, &'static str> {
        let data = self.data;
        let first = *data.get(self.pos).ok_or(F::NO_END)?;
        if first == 0xff {
            if self.pos + 1 != data.len() {
                return Err(F::BYTES_AFTER_END);
            }
            return Ok(None);
        }
        let (item, next) = F::entry(data, self.pos, first)?;
        self.pos = next;
        Ok(Some(item))
    }
}

impl<'a, F: PackedFormat> Iterator for Packed<'a, F> {
    type Item = Result<PackedItem<'a>, &'static str>;

    fn next(&mut self) -> Step<'a> {
        if self.done {
            return None;
        }
        let step = self.step().transpose();
        if !matches!(step, Some(Ok(_))) {
            self.done = true;
        }
        step
    }
}

/// Listpack entries: encoding and data, then the entry's length backwards.
#[derive(Debug)]
pub(crate) struct ListpackFormat;

impl PackedFormat for ListpackFormat {
    const HEADER: usize = 6;
    const SHORT_HEADER: &'static str = "listpack shorter than its header";
    const WRONG_SIZE: &'static str = "listpack total size differs from its string length";
    const NO_END: &'static str = "listpack without an end byte";
    const BYTES_AFTER_END: &'static str = "listpack has bytes after its end byte";

    fn entry(data: &[u8], pos: usize, first: u8) -> Result<(PackedItem<'_>, usize), &'static str> {
        let at = pos;
        let (item, entry_len) = if first & 0x80 == 0 {
            (PackedItem::Int(i64::from(first & 0x7f)), 1)
        } else if first & 0xc0 == 0x80 {
            let len = usize::from(first & 0x3f);
            (
                PackedItem::Bytes(slice(data, at + 1, len, "listpack string past the end")?),
                1 + len,
            )
        } else if first & 0xe0 == 0xc0 {
            let next = slice(data, at + 1, 1, "listpack integer past the end")?[0];
            let raw = (u64::from(first & 0x1f) << 8) | u64::from(next);
            (PackedItem::Int(sign_extend(raw, 13)), 2)
        } else if first & 0xf0 == 0xe0 {
            let next = slice(data, at + 1, 1, "listpack string length past the end")?[0];
            let len = (usize::from(first & 0x0f) << 8) | usize::from(next);
            (
                PackedItem::Bytes(slice(data, at + 2, len, "listpack string past the end")?),
                2 + len,
            )
        } else {
            let int_bytes = |n: usize| -> Result<u64, &'static str> {
                Ok(le_uint(slice(
                    data,
                    at + 1,
                    n,
                    "listpack integer past the end",
                )?))
            };
            match first {
                0xf0 => {
                    let len =
                        usize::try_from(int_bytes(4)?).map_err(|_| "listpack string too long")?;
                    (
                        PackedItem::Bytes(slice(
                            data,
                            at + 5,
                            len,
                            "listpack string past the end",
                        )?),
                        5 + len,
                    )
                }
                0xf1 => (PackedItem::Int(sign_extend(int_bytes(2)?, 16)), 3),
                0xf2 => (PackedItem::Int(sign_extend(int_bytes(3)?, 24)), 4),
                0xf3 => (PackedItem::Int(sign_extend(int_bytes(4)?, 32)), 5),
                0xf4 => (PackedItem::Int(sign_extend(int_bytes(8)?, 64)), 9),
                _ => return Err("listpack element with an unknown encoding"),
            }
        };
        let back_len = match entry_len {
            0..=127 => 1,
            128..=16382 => 2,
            16383..=2_097_150 => 3,
            2_097_151..=268_435_454 => 4,
            _ => 5,
        };
        let next = at
            .checked_add(entry_len + back_len)
            .filter(|&next| next < data.len())
            .ok_or("listpack element runs past the end")?;
        Ok((item, next))
    }
}

/// Ziplist entries: the previous entry's length, then encoding and data.
#[derive(Debug)]
pub(crate) struct ZiplistFormat;

impl PackedFormat for ZiplistFormat {
    const HEADER: usize = 10;
    const SHORT_HEADER: &'static str = "ziplist shorter than its header";
    const WRONG_SIZE: &'static str = "ziplist total size differs from its string length";
    const NO_END: &'static str = "ziplist without an end byte";
    const BYTES_AFTER_END: &'static str = "ziplist has bytes after its end byte";

    fn entry(data: &[u8], pos: usize, first: u8) -> Result<(PackedItem<'_>, usize), &'static str> {
        // The previous entry's length: one byte, or 0xfe and four more.
        let at = pos + if first < 0xfe { 1 } else { 5 };
        let encoding = slice(data, at, 1, "ziplist entry past the end")?[0];
        let be_len = |n: usize| -> Result<usize, &'static str> {
            let bytes = slice(data, at + 1, n, "ziplist string length past the end")?;
            Ok(bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)))
        };
        let int_at = |n: usize, bits: u32| -> Result<(PackedItem<'_>, usize), &'static str> {
            let raw = le_uint(slice(data, at + 1, n, "ziplist integer past the end")?);
            Ok((PackedItem::Int(sign_extend(raw, bits)), 1 + n))
        };
        let (item, entry_len) = match encoding >> 6 {
            0 => {
                let len = usize::from(encoding & 0x3f);
                (
                    PackedItem::Bytes(slice(data, at + 1, len, "ziplist string past the end")?),
                    1 + len,
                )
            }
            1 => {
                let len = (usize::from(encoding & 0x3f) << 8) | be_len(1)?;
                (
                    PackedItem::Bytes(slice(data, at + 2, len, "ziplist string past the end")?),
                    2 + len,
                )
            }
            2 => {
                let len = be_len(4)?;
                (
                    PackedItem::Bytes(slice(data, at + 5, len, "ziplist string past the end")?),
                    5 + len,
                )
            }
            _ => match encoding {
                0xc0 => int_at(2, 16)?,
                0xd0 => int_at(4, 32)?,
                0xe0 => int_at(8, 64)?,
                0xf0 => int_at(3, 24)?,
                0xfe => int_at(1, 8)?,
                0xf1..=0xfd => (PackedItem::Int(i64::from(encoding & 0x0f) - 1), 1),
                _ => return Err("ziplist entry with an unknown encoding"),
            },
        };
        let next = at
            .checked_add(entry_len)
            .filter(|&next| next < data.len())
            .ok_or("ziplist entry runs past the end")?;
        Ok((item, next))
    }
}

/// The members of an intset (a set of integers only), in order.
pub(crate) fn intset_members(data: &[u8]) -> Result<impl Iterator<Item = i64> + '_, &'static str> {
    let header = slice(data, 0, 8, "intset shorter than its header")?;
    let width = le_uint(&header[..4]);
    let count = le_uint(&header[4..8]);
    let width = match width {
        2 | 4 | 8 => width as usize,
        _ => return Err("intset with an unknown integer width"),
    };
    if count
        .checked_mul(width as u64)
        .and_then(|n| n.checked_add(8))
        != Some(data.len() as u64)
    {
        return Err("intset size differs from its count");
    }
    let bits = (width * 8) as u32;
    Ok(data[8..]
        .chunks_exact(width)
        .map(move |chunk| sign_extend(le_uint(chunk), bits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listpack_of(entries: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for entry in entries {
            body.extend_from_slice(entry);
            // Every test entry is shorter than 128 bytes: a one-byte back length.
            body.push(entry.len() as u8);
        }
        let total = 6 + body.len() + 1;
        let mut lp = (total as u32).to_le_bytes().to_vec();
        lp.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(0xff);
        lp
    }

    #[test]
    fn listpack_decodes_every_integer_width_and_short_strings() {
        let lp = listpack_of(&[
            &[0x05],
            &[0x83, b'a', b'b', b'c'],
            &[0xdf, 0xff],             // 13-bit -1
            &[0xf1, 0x00, 0x80],       // 16-bit -32768
            &[0xf2, 0xff, 0xff, 0x7f], // 24-bit 8388607
            &[0xf3, 0x00, 0x00, 0x00, 0x80],
            &[0xf4, 1, 0, 0, 0, 0, 0, 0, 0],
        ]);
        let items: Vec<_> = Listpack::new(&lp).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            items,
            vec![
                PackedItem::Int(5),
                PackedItem::Bytes(b"abc"),
                PackedItem::Int(-1),
                PackedItem::Int(-32768),
                PackedItem::Int(8_388_607),
                PackedItem::Int(i64::from(i32::MIN)),
                PackedItem::Int(1),
            ]
        );
    }

    #[test]
    fn truncated_listpack_is_an_error_not_a_panic() {
        let lp = listpack_of(&[&[0x83, b'a', b'b', b'c']]);
        for cut in 0..lp.len() {
            let mut short = lp[..cut].to_vec();
            let len = short.len() as u32;
            if short.len() >= 4 {
                short[..4].copy_from_slice(&len.to_le_bytes());
            }
            let outcome: Result<Vec<_>, _> = Listpack::new(&short).and_then(|lp| lp.collect());
            assert!(outcome.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn intset_reads_signed_members() {
        let mut set = 2u32.to_le_bytes().to_vec();
        set.extend_from_slice(&2u32.to_le_bytes());
        set.extend_from_slice(&(-3i16).to_le_bytes());
        set.extend_from_slice(&7i16.to_le_bytes());
        assert_eq!(
            intset_members(&set).unwrap().collect::<Vec<_>>(),
            vec![-3, 7]
        );
    }
}
