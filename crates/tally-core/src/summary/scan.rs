//! A minimal JSON scanner over a record's raw text.
//!
//! Why not serde: the aggregator only needs keys, scalar tokens and array
//! lengths, and must see numbers as *text* — records are stored losslessly, so
//! `1e400` is valid data that serde_json (without `arbitrary_precision`)
//! refuses to parse. Scanning in place also means no `Value` tree per record:
//! strings without escapes are borrowed straight from the record, and escaped
//! ones are decoded into a buffer reused across records.
//!
//! Records were validated on ingest, so the scanner is strict but not
//! diagnostic: any surprise is a [`Malformed`] and the record is reported as
//! unparsable rather than guessed at.

use memchr::memchr2;

/// The record's text is not the JSON the scanner expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

pub(crate) type Scan<T> = Result<T, Malformed>;

#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    text: &'a str,
    b: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text, b: text.as_bytes(), pos: 0 }
    }

    #[inline]
    pub fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// Skips whitespace, then consumes and returns one byte.
    #[inline]
    pub fn next_token_byte(&mut self) -> Scan<u8> {
        self.ws();
        let c = self.peek().ok_or(Malformed)?;
        self.pos += 1;
        Ok(c)
    }

    #[inline]
    pub fn expect(&mut self, c: u8) -> Scan<()> {
        if self.next_token_byte()? == c { Ok(()) } else { Err(Malformed) }
    }

    /// At an opening quote: the decoded string, borrowed from the input when
    /// it holds no escapes, otherwise decoded into `buf`.
    #[inline]
    pub fn string<'b>(&mut self, buf: &'b mut String) -> Scan<&'b str>
    where
        'a: 'b,
    {
        let start = self.pos + 1;
        let mut p = self.find_quote_or_backslash(start)?;
        if self.b[p] == b'"' {
            self.pos = p + 1;
            return self.text.get(start..p).ok_or(Malformed);
        }
        buf.clear();
        let mut seg = start;
        loop {
            buf.push_str(self.text.get(seg..p).ok_or(Malformed)?);
            if self.b[p] == b'"' {
                self.pos = p + 1;
                return Ok(buf.as_str());
            }
            let esc = *self.b.get(p + 1).ok_or(Malformed)?;
            p += 2;
            match esc {
                b'"' => buf.push('"'),
                b'\\' => buf.push('\\'),
                b'/' => buf.push('/'),
                b'b' => buf.push('\u{8}'),
                b'f' => buf.push('\u{c}'),
                b'n' => buf.push('\n'),
                b'r' => buf.push('\r'),
                b't' => buf.push('\t'),
                b'u' => {
                    let (c, used) = self.unicode_escape(p)?;
                    buf.push(c);
                    p += used;
                }
                _ => return Err(Malformed),
            }
            seg = p;
            p = self.find_quote_or_backslash(p)?;
        }
    }

    /// The position of the next `"` or `\\` at or after `from`. Most keys and
    /// values are short, where setting up a SIMD search costs more than it
    /// saves: the first 24 bytes are tested eight at a time in a `u64`
    /// (SWAR), the rest with memchr. The profile's leading cost was this
    /// search done a byte at a time.
    #[inline]
    fn find_quote_or_backslash(&self, from: usize) -> Scan<usize> {
        let rest = self.b.get(from..).ok_or(Malformed)?;
        let head = rest.len().min(24);
        let mut i = 0;
        while i + 8 <= head {
            let word = u64::from_le_bytes(rest[i..i + 8].try_into().map_err(|_| Malformed)?);
            if let Some(k) = first_quote_or_backslash(word) {
                return Ok(from + i + k);
            }
            i += 8;
        }
        if let Some(k) = rest[i..head].iter().position(|&c| c == b'"' || c == b'\\') {
            return Ok(from + i + k);
        }
        memchr2(b'"', b'\\', &rest[head..]).map(|k| from + head + k).ok_or(Malformed)
    }

    /// Decodes the `XXXX` after `\u` at `p` (and a following low surrogate);
    /// lone surrogates become U+FFFD, as serde_json's lossy mode would.
    fn unicode_escape(&self, p: usize) -> Scan<(char, usize)> {
        let hi = self.hex4(p)?;
        if (0xD800..0xDC00).contains(&hi) && self.b.get(p + 4..p + 6) == Some(b"\\u") {
            let lo = self.hex4(p + 6)?;
            if (0xDC00..0xE000).contains(&lo) {
                let c = 0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                return Ok((char::from_u32(c).unwrap_or('\u{FFFD}'), 10));
            }
        }
        Ok((char::from_u32(u32::from(hi)).unwrap_or('\u{FFFD}'), 4))
    }

    fn hex4(&self, p: usize) -> Scan<u16> {
        let digits = self.b.get(p..p + 4).ok_or(Malformed)?;
        digits.iter().try_fold(0u16, |acc, &d| {
            let v = (d as char).to_digit(16).ok_or(Malformed)?;
            Ok(acc << 4 | v as u16)
        })
    }

    /// At a quote: moves past the string without decoding it.
    #[inline]
    fn skip_string(&mut self) -> Scan<()> {
        let mut p = self.pos + 1;
        loop {
            p = self.find_quote_or_backslash(p)?;
            if self.b[p] == b'"' {
                self.pos = p + 1;
                return Ok(());
            }
            p += 2;
        }
    }

    /// At a number: its text, exactly as written.
    #[inline]
    pub fn number(&mut self) -> Scan<&'a str> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.b.get(self.pos) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(Malformed);
        }
        self.text.get(start..self.pos).ok_or(Malformed)
    }

    /// Consumes `word` (`true`, `false`, `null`).
    #[inline]
    pub fn literal(&mut self, word: &[u8]) -> Scan<()> {
        if self.b.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// At `[`: consumes the array and returns its number of elements.
    pub fn array_len(&mut self) -> Scan<u64> {
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(0);
        }
        let mut n = 0;
        loop {
            self.ws();
            self.skip_value()?;
            n += 1;
            match self.next_token_byte()? {
                b',' => {}
                b']' => return Ok(n),
                _ => return Err(Malformed),
            }
        }
    }

    /// Consumes one value of any type.
    pub fn skip_value(&mut self) -> Scan<()> {
        match self.peek().ok_or(Malformed)? {
            b'"' => self.skip_string(),
            b'{' | b'[' => self.skip_container(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number().map(drop),
        }
    }

    /// At `{` or `[`: moves past the matching close.
    pub fn skip_container(&mut self) -> Scan<()> {
        let mut depth = 0usize;
        loop {
            match self.peek().ok_or(Malformed)? {
                b'"' => self.skip_string()?,
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' | b']' => {
                    self.pos += 1;
                    depth = depth.checked_sub(1).ok_or(Malformed)?;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => self.pos += 1,
            }
        }
    }
}

/// The index of the first `"` or `\\` among the eight bytes of `word`
/// (little-endian: byte 0 is the lowest). `x - 0x01… & !x & 0x80…` flags the
/// zero bytes of `x`; a borrow can also flag a byte above a true zero, never
/// below one, so the lowest flag over both tests is the first match.
#[inline]
fn first_quote_or_backslash(word: u64) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let quote = word ^ (LO * u64::from(b'"'));
    let backslash = word ^ (LO * u64::from(b'\\'));
    let flags = (quote.wrapping_sub(LO) & !quote | backslash.wrapping_sub(LO) & !backslash) & HI;
    (flags != 0).then(|| flags.trailing_zeros() as usize / 8)
}

/// The string value of the top-level member `key` of the object `text`, or
/// `None` when the member is absent, not a string, or the text is not an
/// object. The first member with that key wins (as in the aggregator's
/// paths, which see every duplicate, this is deterministic).
pub(crate) fn top_level_string<'b>(
    text: &'b str,
    key: &str,
    key_buf: &mut String,
    buf: &'b mut String,
) -> Option<&'b str> {
    let mut cur = Cursor::new(text);
    cur.ws();
    cur.expect(b'{').ok()?;
    cur.ws();
    if cur.peek() == Some(b'}') {
        return None;
    }
    loop {
        cur.ws();
        if cur.peek() != Some(b'"') {
            return None;
        }
        let found = cur.string(key_buf).ok()? == key;
        cur.expect(b':').ok()?;
        cur.ws();
        if found {
            return if cur.peek() == Some(b'"') { cur.string(buf).ok() } else { None };
        }
        cur.skip_value().ok()?;
        match cur.next_token_byte().ok()? {
            b',' => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_of(json: &str) -> Scan<String> {
        let mut buf = String::new();
        Cursor::new(json).string(&mut buf).map(str::to_owned)
    }

    #[test]
    fn decodes_strings_like_serde_json() {
        for json in [r#""plain""#, r#""a\"b\\c\/d\n\t\r\b\f""#, r#""\u00e9é\ud83d\ude00 x""#, r#""""#, r#""\u0000""#] {
            let expected: String = serde_json::from_str(json).unwrap();
            assert_eq!(string_of(json).unwrap(), expected, "{json}");
        }
        assert_eq!(string_of(r#""\ud83d alone""#).unwrap(), "\u{FFFD} alone");
        assert!(string_of(r#""unterminated"#).is_err());
        assert!(string_of(r#""bad \q escape""#).is_err());
    }

    #[test]
    fn finds_the_first_quote_or_backslash_at_every_offset() {
        // Fillers next to '"' (0x22) and '\\' (0x5c) in value, and multi-byte
        // characters (bytes ≥ 0x80), which a borrow in the word test could flag.
        let fillers = ["!", "#", "[", "]", "\u{1}", "~", "é", "😀", "a", " "];
        let mut seed = 7u32;
        for len in 0..60 {
            for target in 0..=len {
                for stop in ["\"", "\\"] {
                    let mut text = String::new();
                    for _ in 0..target {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        text.push_str(fillers[(seed >> 16) as usize % fillers.len()]);
                    }
                    let at = text.len();
                    if target < len {
                        text.push_str(stop);
                        text.push_str("\"\\ tail");
                    }
                    let cur = Cursor::new(&text);
                    let found = cur.find_quote_or_backslash(0);
                    if target < len {
                        assert_eq!(found, Ok(at), "{text:?}");
                    } else {
                        assert_eq!(found, Err(Malformed), "{text:?}");
                    }
                }
            }
        }
        assert_eq!(first_quote_or_backslash(u64::from_le_bytes(*b"abc\\\"xyz")), Some(3));
        assert_eq!(first_quote_or_backslash(u64::from_le_bytes(*b"\x01\"\x00\xff#!]\\")), Some(1));
        assert_eq!(first_quote_or_backslash(u64::from_le_bytes(*b"abcdefgh")), None);
    }

    #[test]
    fn counts_array_elements_and_skips_nested_values() {
        let mut c = Cursor::new(r#"[1, "a,]\"", {"x":[1,2]}, [], null, true, -1e400 ] tail"#);
        assert_eq!(c.array_len(), Ok(7));
        assert_eq!(&r#"[1, "a,]\"", {"x":[1,2]}, [], null, true, -1e400 ] tail"#[c.pos..], " tail");
        assert_eq!(Cursor::new("[ ]").array_len(), Ok(0));
        assert!(Cursor::new("[1,").array_len().is_err());
    }

    #[test]
    fn numbers_come_back_as_written() {
        let mut c = Cursor::new("-12.50e+3,");
        assert_eq!(c.number(), Ok("-12.50e+3"));
        assert_eq!(c.peek(), Some(b','));
    }
}
