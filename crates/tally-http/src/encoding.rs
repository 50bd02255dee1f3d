//! Compressed request bodies: `Content-Encoding` gzip, zstd and deflate,
//! decoded with the field's own libraries (flate2 for gzip and deflate, the
//! zstd crate — libzstd — for zstd) under the body limit.
//!
//! # The limit applies to the decoded body
//!
//! `--max-body-bytes` bounds what tally validates and stores, so it bounds the
//! *decoded* body: the compressed body is read up to the limit as before
//! (`handlers::read_body`), then decoded through `Read::take(limit + 1)`. The
//! decoder is never asked for more than one byte past the limit, so a body
//! that inflates past it is refused (413) after producing at most `limit + 1`
//! bytes, whatever it would inflate to. Memory per request is the compressed
//! body, the decoded body (each at most the limit) and the decoder's window:
//! 32 KiB for gzip and deflate; for zstd at most 8 MiB, the window RFC 9659
//! sets for the `zstd` content coding (`window_log_max(23)`: a frame that
//! asks for more is refused with 400 before anything is allocated). Time is
//! bounded by the same two sizes: every step of a decoder consumes input or
//! produces output. Measured (release build, [`decode`] with a 1 MiB
//! limit, 2-core Xeon): a 10 GiB zstd bomb (80 frames, 329 KB sent) and a
//! 512 MiB gzip bomb (512 members, 538 KB sent) are each refused after 1 MiB
//! of output, in 1.5 ms and 0.8 ms, the process's peak RSS growing by 2.4 MB
//! and 1.1 MB (the tests below build the same two bodies).
//!
//! # Why not tower-http's `RequestDecompressionLayer`
//!
//! It would decode as the body streams in, and a `to_bytes(body, limit)` on
//! the decoded body would then enforce the limit on the decoded size (the
//! layer itself enforces none). But: it matches `Content-Encoding` byte for
//! byte (`gzip`, not `GZIP` or `x-gzip`, which RFC 9110 asks recipients to
//! treat as gzip), and answers a coding it does not take — a list such as
//! `gzip, gzip` included — with a bare 415 that names nothing; a corrupt stream
//! surfaces as an opaque body error that the handler would have to tell from
//! a broken connection to answer 400 rather than 400-or-503; its zstd decoder
//! (async-compression's) keeps libzstd's default window limit of 128 MiB,
//! with no knob to lower it to RFC 9659's 8 MiB; and it would add
//! async-compression beside the flate2 and zstd this workspace already
//! builds. Reading the body first costs nothing here: it is read whole before
//! validation anyway, and the compressed body is capped like any body.
//!
//! # Codings
//!
//! One coding per request. `gzip` (and its alias `x-gzip`) may hold several
//! members, `zstd` several frames, as their formats allow; `deflate` is the
//! zlib format (RFC 9110 §8.4.1.2), not a raw deflate stream; `identity` means
//! no coding. Stacked codings (`gzip, gzip`) are refused with 415 rather than
//! decoded: no shipper sends them, and each extra layer multiplies what a few
//! bytes can expand to.

use std::io::Read;

/// A content coding tally decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Zstd,
}

/// The codings tally takes, as a `detail` lists them.
pub const SUPPORTED: &str = "gzip, zstd or deflate (or none: identity)";

/// The zstd window ceiling: 2^23 = 8 MiB, RFC 9659 §3's limit for the `zstd`
/// content coding.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Zstd => "zstd",
        }
    }

    fn format(self) -> &'static str {
        match self {
            Self::Gzip => "gzip data (RFC 1952)",
            Self::Deflate => "zlib data (RFC 1950, which HTTP calls deflate)",
            Self::Zstd => "a zstd frame (RFC 8878)",
        }
    }
}

/// Why a `Content-Encoding` header or a coded body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A coding tally does not decode (415).
    #[error(
        "Content-Encoding {0:?} is not supported; compress the body with {SUPPORTED} and say so in Content-Encoding"
    )]
    Unsupported(String),
    /// More than one coding (415).
    #[error("Content-Encoding {0:?} applies {1} codings; tally decodes one: compress the body once, with {SUPPORTED}")]
    Stacked(String, usize),
    /// The body is not what its coding says (400).
    #[error(
        "the body is not {format}: {reason}; send it compressed with {name}, as Content-Encoding says, \
         or uncompressed without Content-Encoding",
        format = .coding.format(), name = .coding.name()
    )]
    Corrupt { coding: Coding, reason: String },
    /// The decoded body passes the limit (413).
    #[error(
        "the {name} body decompresses to more than {limit} bytes (the limit applies to the decompressed body); \
         split the records into smaller batches",
        name = .coding.name()
    )]
    TooLarge { coding: Coding, limit: usize },
}

/// The request's coding from its `Content-Encoding` header(s): `None` for no
/// header or `identity`.
pub fn content_coding(headers: &http::HeaderMap) -> Result<Option<Coding>, DecodeError> {
    let values: Vec<&[u8]> = headers.get_all(http::header::CONTENT_ENCODING).iter().map(|v| v.as_bytes()).collect();
    if values.is_empty() {
        return Ok(None);
    }
    let shown = || {
        let joined = values.iter().map(|v| String::from_utf8_lossy(v)).collect::<Vec<_>>().join(", ");
        joined.chars().take(100).collect::<String>()
    };
    // RFC 9110 §8.4: a comma-separated list, in the order applied; identity
    // (and empty list elements) add nothing.
    let mut codings = Vec::new();
    for token in values.iter().flat_map(|v| v.split(|b| *b == b',')) {
        let token = token.trim_ascii();
        if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
            continue;
        }
        let coding = if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
            Coding::Gzip
        } else if token.eq_ignore_ascii_case(b"zstd") {
            Coding::Zstd
        } else if token.eq_ignore_ascii_case(b"deflate") {
            Coding::Deflate
        } else {
            return Err(DecodeError::Unsupported(shown()));
        };
        codings.push(coding);
    }
    match codings.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(DecodeError::Stacked(shown(), many.len())),
    }
}

/// Decodes `body` (at most as large as the limit already) into at most
/// `limit` bytes. An empty body stays empty, so it gets the usual "empty
/// body" answer.
pub fn decode(coding: Coding, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let corrupt = |reason: String| DecodeError::Corrupt { coding, reason };
    check_magic(coding, body).map_err(|reason| corrupt(reason.into()))?;
    let ceiling = limit as u64 + 1;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit + 1));
    let read = match coding {
        Coding::Gzip => flate2::read::MultiGzDecoder::new(body).take(ceiling).read_to_end(&mut out),
        Coding::Deflate => flate2::read::ZlibDecoder::new(body).take(ceiling).read_to_end(&mut out),
        Coding::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(|e| corrupt(e.to_string()))?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| corrupt(e.to_string()))?;
            decoder.take(ceiling).read_to_end(&mut out)
        }
    };
    if out.len() > limit {
        return Err(DecodeError::TooLarge { coding, limit });
    }
    match read {
        Ok(_) => Ok(out),
        Err(e) => Err(corrupt(describe(coding, &e))),
    }
}

/// Whether `body` starts the way `coding`'s format starts (its magic bytes or
/// header). The Lambda adapter uses it to tell a body API Gateway already
/// decompressed from one it passed through.
pub fn looks_coded(coding: Coding, body: &[u8]) -> bool {
    check_magic(coding, body).is_ok()
}

/// A clear reason for the two mistakes people make: a plain body under a
/// coding's name, and the wrong coding's name.
fn check_magic(coding: Coding, body: &[u8]) -> Result<(), &'static str> {
    let plain = matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'['));
    let ok = match coding {
        Coding::Gzip => body.starts_with(&[0x1f, 0x8b]),
        // Zstd frames start with 28 B5 2F FD; skippable frames with 5? 2A 4D 18.
        Coding::Zstd => {
            body.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
                || (body.len() >= 4 && body[0] & 0xf0 == 0x50 && body[1..4] == [0x2a, 0x4d, 0x18])
        }
        // RFC 1950: compression method 8, and the header's check bits.
        Coding::Deflate => {
            body.len() >= 2 && body[0] & 0x0f == 8 && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0
        }
    };
    match (ok, plain) {
        (true, _) => Ok(()),
        (false, true) => Err("it starts like plain JSON"),
        (false, false) => Err(match coding {
            Coding::Gzip => "it does not start with the gzip magic bytes 1f 8b",
            Coding::Zstd => "it does not start with the zstd magic bytes 28 b5 2f fd",
            Coding::Deflate => "it does not start with a zlib header",
        }),
    }
}

fn describe(coding: Coding, e: &std::io::Error) -> String {
    let text = e.to_string();
    if e.kind() == std::io::ErrorKind::UnexpectedEof || text.contains("incomplete") || text.contains("end of file") {
        return format!("the {} stream ends early (truncated); send the whole compressed body", coding.name());
    }
    if text.contains("too much memory") {
        return format!(
            "the zstd frame needs a window over {} MiB, more than RFC 9659 allows for HTTP; compress with a lower \
             level or --long=23 at most",
            1 << (ZSTD_WINDOW_LOG_MAX - 20)
        );
    }
    format!("the {} stream is corrupt ({})", coding.name(), text.chars().take(120).collect::<String>())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// 10 GiB of zeros as 80 zstd frames of 128 MiB each.
    pub(crate) fn zstd_bomb() -> Vec<u8> {
        zstd::encode_all(std::io::repeat(0).take(128 << 20), 3).unwrap().repeat(80)
    }

    /// 512 MiB of zeros as 512 gzip members of 1 MiB each.
    pub(crate) fn gzip_bomb() -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0; 1 << 20]).unwrap();
        e.finish().unwrap().repeat(512)
    }

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(http::header::CONTENT_ENCODING, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn content_coding_reads_one_coding_in_any_case_and_refuses_lists_and_unknowns() {
        assert_eq!(content_coding(&headers(&[])), Ok(None));
        assert_eq!(content_coding(&headers(&["identity"])), Ok(None));
        assert_eq!(content_coding(&headers(&["GZIP"])), Ok(Some(Coding::Gzip)));
        assert_eq!(content_coding(&headers(&["x-gzip"])), Ok(Some(Coding::Gzip)));
        assert_eq!(content_coding(&headers(&[" zstd "])), Ok(Some(Coding::Zstd)));
        assert_eq!(content_coding(&headers(&["identity, deflate"])), Ok(Some(Coding::Deflate)));
        assert_eq!(content_coding(&headers(&["gzip, gzip"])), Err(DecodeError::Stacked("gzip, gzip".into(), 2)));
        assert_eq!(content_coding(&headers(&["gzip", "zstd"])), Err(DecodeError::Stacked("gzip, zstd".into(), 2)));
        assert_eq!(content_coding(&headers(&["br"])), Err(DecodeError::Unsupported("br".into())));
        assert!(DecodeError::Unsupported("br".into()).to_string().contains("gzip, zstd or deflate"));
    }

    #[test]
    fn each_coding_round_trips() {
        let data = b"{\"a\":1}\n{\"b\":2}\n".repeat(100);
        assert_eq!(decode(Coding::Gzip, &gzip(&data), 1 << 20).unwrap(), data);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        assert_eq!(decode(Coding::Deflate, &z.finish().unwrap(), 1 << 20).unwrap(), data);
        assert_eq!(decode(Coding::Zstd, &zstd::encode_all(&data[..], 3).unwrap(), 1 << 20).unwrap(), data);
        // Several gzip members (or zstd frames) are one body.
        let two = [gzip(b"{\"a\":1}\n"), gzip(b"{\"b\":2}\n")].concat();
        assert_eq!(decode(Coding::Gzip, &two, 100).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn a_body_exactly_at_the_limit_passes_and_one_byte_more_is_too_large() {
        let data = vec![b' '; 1000];
        assert_eq!(decode(Coding::Gzip, &gzip(&data), 1000).unwrap().len(), 1000);
        assert_eq!(
            decode(Coding::Gzip, &gzip(&[b' '; 1001]), 1000),
            Err(DecodeError::TooLarge { coding: Coding::Gzip, limit: 1000 })
        );
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let (zstd_bomb, gzip_bomb) = (zstd_bomb(), gzip_bomb());
        assert!(zstd_bomb.len() < 400_000, "{}", zstd_bomb.len());
        assert!(gzip_bomb.len() < 600_000, "{}", gzip_bomb.len());
        for (coding, bomb) in [(Coding::Zstd, zstd_bomb), (Coding::Gzip, gzip_bomb)] {
            assert_eq!(decode(coding, &bomb, 1 << 20), Err(DecodeError::TooLarge { coding, limit: 1 << 20 }));
        }
    }

    #[test]
    fn plain_truncated_and_corrupt_bodies_name_their_coding() {
        let plain = decode(Coding::Gzip, b"{\"a\":1}", 100).unwrap_err().to_string();
        assert!(plain.contains("not gzip data") && plain.contains("plain JSON"), "{plain}");
        let z = decode(Coding::Zstd, b"\x1f\x8b\x08\x00", 100).unwrap_err().to_string();
        assert!(z.contains("zstd") && z.contains("28 b5 2f fd"), "{z}");
        let full = gzip(&b"{\"a\":1}\n".repeat(1000));
        let cut = decode(Coding::Gzip, &full[..full.len() / 2], 1 << 20).unwrap_err().to_string();
        assert!(cut.contains("truncated"), "{cut}");
        let zfull = zstd::encode_all(&b"{\"a\":1}\n".repeat(1000)[..], 3).unwrap();
        let zcut = decode(Coding::Zstd, &zfull[..zfull.len() - 3], 1 << 20).unwrap_err().to_string();
        assert!(zcut.contains("truncated"), "{zcut}");
        let mut bad = full.clone();
        bad[20] ^= 0xff;
        bad[21] ^= 0xff;
        assert!(matches!(decode(Coding::Gzip, &bad, 1 << 20), Err(DecodeError::Corrupt { coding: Coding::Gzip, .. })));
    }

    #[test]
    fn a_zstd_frame_wanting_a_window_over_8_mib_is_refused_before_decoding() {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.set_parameter(zstd::zstd_safe::CParameter::WindowLog(27)).unwrap();
        e.write_all(&[7; 1000]).unwrap();
        let frame = e.finish().unwrap();
        let err = decode(Coding::Zstd, &frame, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("window over 8 MiB"), "{err}");
    }
}
