//! Signed, expiring links to the report site: what a notification carries,
//! what `tally report-link` prints, and what the server checks before it
//! reads a page.
//!
//! # Why a signed link
//! The people a weekly report is announced to open it from a chat message or
//! an e-mail, in a browser, which cannot send `x-api-key`. So the link itself
//! carries the authority: `…/reports/2026-W47/?exp=<unix seconds>&sig=<hex>`,
//! where `sig` is HMAC-SHA256, keyed with a secret only tally knows
//! ([`LinkSecretStore`]: a file in the data directory locally, a Secrets
//! Manager secret on AWS), over the scope and the expiry. Nobody can make a
//! link without the secret, change its expiry, or use it after it expires;
//! rotating the secret revokes every link at once.
//!
//! # What a token covers: the site, not one week
//! The signed message is `tally-report-link-v1\n/reports/\n<exp>`: a token
//! opens every page of the report site (the index and every week) until it
//! expires. The pages link to each other — the index to each week, a week to
//! the previous and next ones and to the index — and a person who follows
//! those links expects them to open; a token scoped to one week would make
//! them all 403. The report site is one document set with one audience (the
//! people the reports are announced to), so a week's link grants what the
//! index already shows to the same people. The scope is in the signed
//! message, so a narrower kind of token can be added later without any old
//! token passing for it.
//!
//! # Checking
//! [`LinkSigner::check`] compares the signature in constant time (`hmac`'s
//! `verify_slice`) before it looks at the expiry, so an expired link is
//! reported as expired only when it is genuine; both are refused alike
//! ([`Refused`]), with a message that says how to get a fresh link.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::Timestamp;
use crate::ports::{LinkSecretStore, SecretError};
use crate::week::IsoWeek;

/// The path every report page lives under, and the scope a token covers.
pub const SITE_PATH: &str = "/reports/";

/// Prefix of every signed message: a token for another purpose (or a later
/// format) can never pass for this one.
const DOMAIN: &[u8] = b"tally-report-link-v1\n";

/// How long a notification's link works unless configured otherwise.
pub const DEFAULT_VALIDITY_DAYS: u16 = 30;

/// The longest validity `--report-link-days` accepts: a year. Longer-lived
/// links are better replaced by fresh ones (`tally report-link`).
pub const MAX_VALIDITY_DAYS: u16 = 366;

/// The key that signs report links. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkSecret(Arc<[u8]>);

impl LinkSecret {
    /// The shortest secret accepted: 32 bytes, HMAC-SHA256's output size
    /// (RFC 2104 §3: keys shorter than the output weaken the MAC).
    pub const MIN_BYTES: usize = 32;

    /// A secret from its stored text (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if text.len() < Self::MIN_BYTES {
            return Err(SecretError::Invalid {
                message: format!(
                    "it has {} bytes, fewer than {}; replace it with a longer random value (or delete the local \
                     secret file so that tally makes a new one)",
                    text.len(),
                    Self::MIN_BYTES
                ),
            });
        }
        Ok(Self(Arc::from(text.as_bytes())))
    }

    /// A fresh random secret's text: 32 random bytes, hex-encoded.
    pub fn generate_text() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this never fails.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

impl std::fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSecret(<redacted>)")
    }
}

/// A checked or freshly signed token: an expiry and its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkToken {
    /// Unix seconds.
    expires: i64,
    sig: [u8; 32],
}

impl LinkToken {
    fn message(expires: i64) -> Vec<u8> {
        let mut m = DOMAIN.to_vec();
        m.extend_from_slice(SITE_PATH.as_bytes());
        m.push(b'\n');
        m.extend_from_slice(expires.to_string().as_bytes());
        m
    }

    fn sign(secret: &LinkSecret, expires: i64) -> Self {
        let mut mac = secret.mac();
        mac.update(&Self::message(expires));
        Self { expires, sig: mac.finalize().into_bytes().into() }
    }

    /// When the token stops working.
    pub fn expires(&self) -> Timestamp {
        Timestamp::from_millis(self.expires.saturating_mul(1000))
    }

    /// `exp=<unix seconds>&sig=<64 hex digits>`: the query string of a link
    /// (nothing in it needs percent-encoding).
    pub fn query(&self) -> String {
        format!("exp={}&sig={}", self.expires, hex::encode(self.sig))
    }
}

/// Why a link was refused. Every message says how to get a fresh one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `exp` or no `sig`.
    #[error("this address has no report link token (exp and sig)")]
    Missing,
    /// `exp` or `sig` is not in the form tally writes, or the signature does
    /// not match: the link was changed, cut short, or signed with another
    /// secret (rotated since, or another installation's).
    #[error("this report link is not valid: it was changed or cut short, or the secret that signed it has changed")]
    Invalid,
    /// A genuine link whose time is up.
    #[error("this report link expired on {at}")]
    Expired { at: Timestamp },
}

/// Signs and checks tokens with the secret of a [`LinkSecretStore`], read
/// once (on first use: a cold start pays for it only when a link is signed
/// or checked) and kept for the life of the process. A failed read is not
/// kept: the next call tries again.
#[derive(Debug, Clone)]
pub struct LinkSigner {
    store: Arc<dyn LinkSecretStore>,
    secret: Arc<tokio::sync::OnceCell<LinkSecret>>,
}

impl LinkSigner {
    pub fn new(store: Arc<dyn LinkSecretStore>) -> Self {
        Self { store, secret: Arc::default() }
    }

    async fn secret(&self) -> Result<&LinkSecret, SecretError> {
        self.secret.get_or_try_init(|| self.store.load()).await
    }

    /// A token valid until `expires` (rounded down to the second).
    pub async fn sign(&self, expires: Timestamp) -> Result<LinkToken, SecretError> {
        Ok(LinkToken::sign(self.secret().await?, expires.as_millis().div_euclid(1000)))
    }

    /// Checks the `exp` and `sig` of a request at `now`. The outer error is
    /// the server's (the secret could not be read); the inner one the link's.
    pub async fn check(
        &self,
        exp: Option<&str>,
        sig: Option<&str>,
        now: Timestamp,
    ) -> Result<Result<LinkToken, Refused>, SecretError> {
        let (Some(exp), Some(sig)) = (exp, sig) else { return Ok(Err(Refused::Missing)) };
        // Only the exact form tally writes: digits without sign or leading
        // zeros, and 64 lower-case hex digits. Anything else cannot have
        // been signed, so it is refused before the secret is even read.
        let canonical =
            !exp.is_empty() && exp.len() <= 12 && exp.bytes().all(|b| b.is_ascii_digit()) && !exp.starts_with('0');
        let sig_ok = sig.len() == 64 && sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let (Some(expires), true) = (exp.parse::<i64>().ok().filter(|_| canonical), sig_ok) else {
            return Ok(Err(Refused::Invalid));
        };
        let Ok(sig) = hex::decode(sig) else { return Ok(Err(Refused::Invalid)) };
        let mut mac = self.secret().await?.mac();
        mac.update(&LinkToken::message(expires));
        if mac.verify_slice(&sig).is_err() {
            return Ok(Err(Refused::Invalid));
        }
        let Ok(sig) = <[u8; 32]>::try_from(sig) else { return Ok(Err(Refused::Invalid)) };
        let token = LinkToken { expires, sig };
        if token.expires() <= now {
            return Ok(Err(Refused::Expired { at: token.expires() }));
        }
        Ok(Ok(token))
    }
}

/// Where the report site is reached from outside: `http(s)://host[:port][/path]`,
/// e.g. `http://127.0.0.1:8080` or the API's URL on AWS
/// (`https://abc.execute-api.eu-west-1.amazonaws.com/Prod/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn parse(url: &str) -> Result<Self, InvalidPublicUrl> {
        let url = url.trim();
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        let host = rest.map(|r| r.split('/').next().unwrap_or_default());
        let ok = rest.is_some()
            && host.is_some_and(|h| !h.is_empty())
            && !url.contains(['?', '#', ' ', '"', '<', '>', '\\'])
            && url.is_ascii();
        if !ok {
            return Err(InvalidPublicUrl(url.chars().take(200).collect()));
        }
        Ok(Self(url.trim_end_matches('/').to_owned()))
    }

    /// The URL without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A public URL tally cannot build links on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a public URL tally can put in links: give http:// or https://, a host, and optionally a port and \
     path (no query or fragment), e.g. http://127.0.0.1:8080 or https://reports.example.com"
)]
pub struct InvalidPublicUrl(String);

/// Makes the links people are sent: the public URL, a signer, and how long
/// links stay valid.
#[derive(Debug, Clone)]
pub struct ReportLinks {
    signer: LinkSigner,
    base: PublicUrl,
    validity: Duration,
}

impl ReportLinks {
    /// `validity_days` is clamped to 1..=[`MAX_VALIDITY_DAYS`].
    pub fn new(signer: LinkSigner, base: PublicUrl, validity_days: u16) -> Self {
        let days = u64::from(validity_days.clamp(1, MAX_VALIDITY_DAYS));
        Self { signer, base, validity: Duration::from_secs(days * 86_400) }
    }

    /// How long a link made now stays valid.
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// The unsigned address of `week`'s page (`<base>/reports/<week>/`).
    pub fn week_url(&self, week: IsoWeek) -> String {
        format!("{}{SITE_PATH}{week}/", self.base)
    }

    /// The address of the index (`<base>/reports/`).
    pub fn site_url(&self) -> String {
        format!("{}{SITE_PATH}", self.base)
    }

    /// `week`'s page, signed at `now` for [`validity`](Self::validity).
    pub async fn week(&self, week: IsoWeek, now: Timestamp) -> Result<String, SecretError> {
        Ok(format!("{}?{}", self.week_url(week), self.token(now).await?.query()))
    }

    /// The index, signed at `now` for [`validity`](Self::validity).
    pub async fn site(&self, now: Timestamp) -> Result<String, SecretError> {
        Ok(format!("{}?{}", self.site_url(), self.token(now).await?.query()))
    }

    async fn token(&self, now: Timestamp) -> Result<LinkToken, SecretError> {
        let ms = i64::try_from(self.validity.as_millis()).unwrap_or(i64::MAX);
        self.signer.sign(Timestamp::from_millis(now.as_millis().saturating_add(ms))).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::MemoryLinkSecret;

    fn signer() -> LinkSigner {
        LinkSigner::new(Arc::new(MemoryLinkSecret::new("k".repeat(40))))
    }

    fn parts(query: &str) -> (String, String) {
        let (exp, sig) = query.split_once('&').unwrap();
        (exp.strip_prefix("exp=").unwrap().to_owned(), sig.strip_prefix("sig=").unwrap().to_owned())
    }

    const NOW: Timestamp = Timestamp::from_millis(1_796_000_000_000);

    #[tokio::test]
    async fn a_signed_token_checks_until_it_expires_and_not_after() {
        let s = signer();
        let token = s.sign(Timestamp::from_millis(NOW.as_millis() + 60_000)).await.unwrap();
        let (exp, sig) = parts(&token.query());
        assert_eq!(s.check(Some(&exp), Some(&sig), NOW).await.unwrap(), Ok(token));
        let later = Timestamp::from_millis(NOW.as_millis() + 60_000);
        assert_eq!(s.check(Some(&exp), Some(&sig), later).await.unwrap(), Err(Refused::Expired { at: later }));
    }

    #[tokio::test]
    async fn any_changed_byte_missing_part_or_other_secret_is_refused() {
        let s = signer();
        let token = s.sign(Timestamp::from_millis(NOW.as_millis() + 86_400_000)).await.unwrap();
        let (exp, sig) = parts(&token.query());
        for i in 0..sig.len() {
            let mut bad = sig.clone().into_bytes();
            bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
            let bad = String::from_utf8(bad).unwrap();
            assert_eq!(s.check(Some(&exp), Some(&bad), NOW).await.unwrap(), Err(Refused::Invalid), "byte {i}");
        }
        let later = (exp.parse::<i64>().unwrap() + 1).to_string();
        assert_eq!(s.check(Some(&later), Some(&sig), NOW).await.unwrap(), Err(Refused::Invalid), "a longer life");
        for (e, g) in
            [(format!("0{exp}"), sig.clone()), (format!("+{exp}"), sig.clone()), (exp.clone(), sig.to_uppercase())]
        {
            assert_eq!(s.check(Some(&e), Some(&g), NOW).await.unwrap(), Err(Refused::Invalid), "{e} {g}");
        }
        assert_eq!(s.check(None, Some(&sig), NOW).await.unwrap(), Err(Refused::Missing));
        assert_eq!(s.check(Some(&exp), None, NOW).await.unwrap(), Err(Refused::Missing));
        let other = LinkSigner::new(Arc::new(MemoryLinkSecret::new("j".repeat(40))));
        assert_eq!(other.check(Some(&exp), Some(&sig), NOW).await.unwrap(), Err(Refused::Invalid));
    }

    #[tokio::test]
    async fn links_are_the_public_url_the_route_and_a_token_for_the_validity() {
        let base = PublicUrl::parse("https://abc.execute-api.eu-west-1.amazonaws.com/Prod/").unwrap();
        let links = ReportLinks::new(signer(), base, 30);
        let week = IsoWeek::parse("2026-W47").unwrap();
        let link = links.week(week, NOW).await.unwrap();
        let (url, query) = link.split_once('?').unwrap();
        assert_eq!(url, "https://abc.execute-api.eu-west-1.amazonaws.com/Prod/reports/2026-W47/");
        let (exp, sig) = parts(query);
        assert_eq!(exp.parse::<i64>().unwrap(), NOW.as_millis() / 1000 + 30 * 86_400);
        assert!(links.signer.check(Some(&exp), Some(&sig), NOW).await.unwrap().is_ok());
        assert!(
            links
                .site(NOW)
                .await
                .unwrap()
                .starts_with("https://abc.execute-api.eu-west-1.amazonaws.com/Prod/reports/?exp=")
        );
    }

    #[test]
    fn public_urls_must_be_http_with_a_host_and_nothing_after_the_path() {
        assert_eq!(PublicUrl::parse("http://127.0.0.1:8080").unwrap().as_str(), "http://127.0.0.1:8080");
        assert_eq!(PublicUrl::parse(" https://r.example.com/tally/ ").unwrap().as_str(), "https://r.example.com/tally");
        for bad in
            ["", "127.0.0.1:8080", "ftp://x", "http://", "http:///x", "https://x/?a=1", "https://x/#f", "https://é.com"]
        {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_memory_secret_meets_the_secret_contract() {
        let secret = MemoryLinkSecret::new("m".repeat(40));
        crate::testing::link_secret_contract(&secret, &secret.clone()).await;
    }

    #[test]
    fn secrets_are_long_enough_and_never_printed() {
        assert!(LinkSecret::from_text("short").is_err());
        let text = LinkSecret::generate_text();
        assert_eq!(text.len(), 64);
        let secret = LinkSecret::from_text(&format!("{text}\n")).unwrap();
        assert_eq!(secret, LinkSecret::from_text(&text).unwrap());
        assert!(!format!("{secret:?}").contains(&text));
        assert_ne!(LinkSecret::generate_text(), text);
    }
}
