//! Akamai EdgeAuth tokens (Auth Token 2.0), checked as Akamai's edge checks them, so the
//! token code a customer already runs (Akamai's `akamai-edgeauth` generators for Python,
//! Node and others) works unchanged.
//!
//! A token is `name=value` fields joined by `~`: `ip`, `st` (start), `exp` (expiry, unix
//! seconds), `acl` (path patterns with `*` and `?`, several joined by `!`), `id`, `data`,
//! then `hmac`: the hex HMAC, keyed with the hex-decoded secret, of every field before it
//! as sent, plus `~url=<path>` for a token without `acl` (it is for one path) and
//! `~salt=<salt>` when one is configured. No IO and no clock: the time is passed in.

use std::net::IpAddr;

use aws_lc_rs::hmac;

use super::TokenError;

/// Shortest key accepted, bytes: an empty or tiny key (an unset template variable) would
/// let anyone sign.
pub const MIN_KEY_BYTES: usize = 8;

/// Longest token looked at; a longer one is refused unread.
pub const MAX_TOKEN: usize = 4096;

/// The HMAC of a token, as its generator was told (`algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha1,
}

impl Algorithm {
    fn ring(self) -> hmac::Algorithm {
        match self {
            Algorithm::Sha256 => hmac::HMAC_SHA256,
            Algorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        }
    }
}

/// How a service's tokens are checked.
pub struct Verifier {
    /// Every key in service (rotation: the new one and the old one), hex-decoded.
    keys: Vec<hmac::Key>,
    salt: Option<String>,
    /// Clock skew allowed either side of `st` and `exp`, seconds.
    leeway: u64,
    /// Longest lifetime from now a token's `exp` may claim, seconds.
    max_lifetime: Option<u64>,
    /// The generator's `escape_early`: `url` (and `ip`, `id`, `data`) were sent
    /// form-escaped with lowercase hex.
    escape_early: bool,
}

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    /// The token's `id`, when it has one (a rate limit may be keyed on it).
    pub id: Option<String>,
}

/// One request's facts a token is checked against.
pub struct Presented<'a> {
    pub token: &'a str,
    /// The request's path, as sent (still percent-encoded).
    pub path: &'a str,
    pub client: IpAddr,
    /// Unix seconds.
    pub now: u64,
}

// === impl Verifier ===

impl Verifier {
    /// `keys`: hex secrets (an even number of hex digits each); the first signs.
    pub fn new(
        keys: &[String],
        algorithm: Algorithm,
        salt: Option<String>,
        leeway: u64,
        max_lifetime: Option<u64>,
        escape_early: bool,
    ) -> Result<Self, String> {
        let keys = keys
            .iter()
            .enumerate()
            .map(|(i, hex)| {
                data_encoding::HEXLOWER_PERMISSIVE
                    .decode(hex.as_bytes())
                    .ok()
                    .filter(|bytes| bytes.len() >= MIN_KEY_BYTES)
                    .map(|bytes| hmac::Key::new(algorithm.ring(), &bytes))
                    .ok_or_else(|| {
                        format!(
                            "key {i} must be at least {} hex digits (an even number)",
                            2 * MIN_KEY_BYTES
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("at least one key is needed".into());
        }
        Ok(Self {
            keys,
            salt,
            leeway,
            max_lifetime,
            escape_early,
        })
    }

    /// Checks a token: its signature first (nothing about a forged token is believed),
    /// then its times, address and paths.
    pub fn check(&self, p: &Presented<'_>) -> Result<Valid, TokenError> {
        if p.token.is_empty() {
            return Err(TokenError::Missing);
        }
        if p.token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed);
        }
        let token = Token::parse(p.token)?;
        let mut signed = token.signed.to_string();
        if token.acl.is_none() {
            signed.push_str("~url=");
            signed.push_str(&self.escape(p.path));
        }
        if let Some(salt) = &self.salt {
            signed.push_str("~salt=");
            signed.push_str(salt);
        }
        let tag = data_encoding::HEXLOWER_PERMISSIVE
            .decode(token.hmac.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        if !self
            .keys
            .iter()
            .any(|key| hmac::verify(key, signed.as_bytes(), &tag).is_ok())
        {
            return Err(TokenError::BadSignature);
        }
        if p.now > token.exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        if token
            .st
            .is_some_and(|st| p.now.saturating_add(self.leeway) < st)
        {
            return Err(TokenError::NotYetValid);
        }
        if self
            .max_lifetime
            .is_some_and(|max| token.exp > p.now.saturating_add(max).saturating_add(self.leeway))
        {
            return Err(TokenError::TooLongLived);
        }
        if let Some(ip) = token.ip {
            let ip = percent_decode(ip);
            if ip.parse::<IpAddr>().ok() != Some(p.client) {
                return Err(TokenError::WrongIp);
            }
        }
        if let Some(acl) = token.acl {
            if !acl.split('!').any(|pattern| glob(pattern, p.path)) {
                return Err(TokenError::WrongPath);
            }
        }
        Ok(Valid {
            id: token.id.map(percent_decode),
        })
    }

    /// A token for `strata sign`: signed with the first key, with this service's salt and
    /// escaping. `url` is the path the token is for when there is no `acl`.
    pub fn generate(
        &self,
        acl: Option<&str>,
        url: &str,
        exp: u64,
        ip: Option<&str>,
        id: Option<&str>,
    ) -> Result<String, String> {
        Generate {
            key: &self.keys[0],
            salt: self.salt.as_deref(),
            start: None,
            exp,
            acl,
            url: Some(url),
            ip,
            id,
            data: None,
            escape_early: self.escape_early,
        }
        .token()
    }

    /// The path as the generator was given it: escaped early, it was given unescaped
    /// (`/a b`), and the request carries it percent-encoded (`/a%20b`).
    fn escape(&self, path: &str) -> String {
        if self.escape_early {
            escape_early(&percent_decode(path))
        } else {
            path.to_string()
        }
    }
}

/// Generates a token as Akamai's generators do (`strata sign`, tests). `acl` makes an
/// ACL token; without it the token is for `url` alone.
pub struct Generate<'a> {
    pub key: &'a hmac::Key,
    pub salt: Option<&'a str>,
    pub start: Option<u64>,
    pub exp: u64,
    pub acl: Option<&'a str>,
    pub url: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub id: Option<&'a str>,
    pub data: Option<&'a str>,
    pub escape_early: bool,
}

impl Generate<'_> {
    pub fn token(&self) -> Result<String, String> {
        let esc = |s: &str| {
            if self.escape_early {
                escape_early(s)
            } else {
                s.to_string()
            }
        };
        let mut fields = Vec::new();
        if let Some(ip) = self.ip {
            fields.push(format!("ip={}", esc(ip)));
        }
        if let Some(st) = self.start {
            fields.push(format!("st={st}"));
        }
        fields.push(format!("exp={}", self.exp));
        if let Some(acl) = self.acl {
            fields.push(format!("acl={acl}"));
        }
        if let Some(id) = self.id {
            fields.push(format!("id={}", esc(id)));
        }
        if let Some(data) = self.data {
            fields.push(format!("data={}", esc(data)));
        }
        let mut signed = fields.clone();
        match (self.acl, self.url) {
            (None, Some(url)) => signed.push(format!("url={}", esc(url))),
            (None, None) => return Err("a token needs an acl or a url".into()),
            (Some(_), _) => {}
        }
        if let Some(salt) = self.salt {
            signed.push(format!("salt={salt}"));
        }
        let tag = hmac::sign(self.key, signed.join("~").as_bytes());
        fields.push(format!(
            "hmac={}",
            data_encoding::HEXLOWER.encode(tag.as_ref())
        ));
        Ok(fields.join("~"))
    }
}

/// A token's fields, borrowed from it.
struct Token<'a> {
    /// Everything before `~hmac=`: what the HMAC covers.
    signed: &'a str,
    hmac: &'a str,
    exp: u64,
    st: Option<u64>,
    acl: Option<&'a str>,
    ip: Option<&'a str>,
    id: Option<&'a str>,
}

impl<'a> Token<'a> {
    fn parse(token: &'a str) -> Result<Self, TokenError> {
        let (signed, hmac) = token.rsplit_once("~hmac=").ok_or(TokenError::Malformed)?;
        let mut t = Token {
            signed,
            hmac,
            exp: 0,
            st: None,
            acl: None,
            ip: None,
            id: None,
        };
        let mut exp = None;
        for field in signed.split('~') {
            let (name, value) = field.split_once('=').ok_or(TokenError::Malformed)?;
            let seconds = || value.parse::<u64>().map_err(|_| TokenError::Malformed);
            // A field given twice is refused: which one would count is a guess.
            let once = |seen: bool| {
                if seen {
                    Err(TokenError::Malformed)
                } else {
                    Ok(())
                }
            };
            match name {
                "exp" => {
                    once(exp.is_some())?;
                    exp = Some(seconds()?);
                }
                "st" => {
                    once(t.st.is_some())?;
                    t.st = Some(seconds()?);
                }
                "acl" => {
                    once(t.acl.is_some())?;
                    t.acl = Some(value);
                }
                "ip" => {
                    once(t.ip.is_some())?;
                    t.ip = Some(value);
                }
                "id" => {
                    once(t.id.is_some())?;
                    t.id = Some(value);
                }
                // Never sent: `url` and `salt` are appended by the verifier, and `hmac`
                // comes last. A token carrying one is forged (`url=/x~acl=/*` inside a
                // path-token's signed text would turn it into a token for every path).
                "url" | "salt" | "hmac" => return Err(TokenError::Malformed),
                // `data` and fields unknown here are covered by the HMAC and not read.
                _ => {}
            }
        }
        t.exp = exp.ok_or(TokenError::Malformed)?;
        Ok(t)
    }
}

/// Python's `quote_plus` with the escapes' hex in lowercase (the generators'
/// `escape_early`).
fn escape_early(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// `*` any run of characters (slashes too), `?` any one; everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it has taken up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// An ACL token under the hex key `key_hex` (tests of this module and the phase's).
#[cfg(test)]
pub(crate) fn test_acl_token(key_hex: &str, acl: &str, exp: u64, id: Option<&str>) -> String {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(key_hex.as_bytes())
        .unwrap();
    Generate {
        key: &hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        salt: None,
        start: None,
        exp,
        acl: Some(acl),
        url: None,
        ip: None,
        id,
        data: None,
        escape_early: false,
    }
    .token()
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a1b2c3d4e5f60718";

    fn key() -> hmac::Key {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(KEY.as_bytes())
            .unwrap();
        hmac::Key::new(hmac::HMAC_SHA256, &bytes)
    }

    fn verifier() -> Verifier {
        Verifier::new(&[KEY.into()], Algorithm::Sha256, None, 0, None, false).unwrap()
    }

    fn acl_token(acl: &str, exp: u64) -> String {
        test_acl_token(KEY, acl, exp, Some("viewer-7"))
    }

    fn present<'a>(token: &'a str, path: &'a str, now: u64) -> Presented<'a> {
        Presented {
            token,
            path,
            client: "192.0.2.1".parse().unwrap(),
            now,
        }
    }

    #[test]
    fn an_acl_token_opens_the_paths_it_names_until_it_expires() {
        let v = verifier();
        let t = acl_token("/videos/*!/live/?.m3u8", 1000);
        assert_eq!(
            v.check(&present(&t, "/videos/a/b.ts", 999)),
            Ok(Valid {
                id: Some("viewer-7".into())
            })
        );
        assert!(v.check(&present(&t, "/live/1.m3u8", 1000)).is_ok());
        assert_eq!(
            v.check(&present(&t, "/live/12.m3u8", 999)),
            Err(TokenError::WrongPath)
        );
        assert_eq!(
            v.check(&present(&t, "/videos/a", 1001)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_changed_field_or_another_key_breaks_the_signature() {
        let v = verifier();
        let t = acl_token("/videos/*", 1000);
        let widened = t.replace("acl=/videos/*", "acl=/*");
        assert_eq!(
            v.check(&present(&widened, "/x", 1)),
            Err(TokenError::BadSignature)
        );
        let other = Verifier::new(
            &["00ff00ff00ff00ff".into()],
            Algorithm::Sha256,
            None,
            0,
            None,
            false,
        )
        .unwrap();
        assert_eq!(
            other.check(&present(&t, "/videos/a", 1)),
            Err(TokenError::BadSignature)
        );
        // Rotation: either key of two in service opens it.
        let both = Verifier::new(
            &["00ff00ff00ff00ff".into(), KEY.into()],
            Algorithm::Sha256,
            None,
            0,
            None,
            false,
        )
        .unwrap();
        assert!(both.check(&present(&t, "/videos/a", 1)).is_ok());
    }

    #[test]
    fn a_path_token_for_a_crafted_path_cannot_become_an_acl_token() {
        // A customer signs a path token for a path an attacker chose: `~`, `=` and `*` are
        // legal in paths. Its signed text then reads like an ACL token's.
        let v = verifier();
        let crafted = "/u/x~acl=/*";
        let t = Generate {
            url: Some(crafted),
            acl: None,
            id: None,
            ..gen(&key(), 1000)
        }
        .token()
        .unwrap();
        let exp = t.split('~').next().unwrap();
        let hmac = t.rsplit_once("~hmac=").unwrap().1;
        let forged = format!("{exp}~url={crafted}~hmac={hmac}");
        assert_eq!(
            v.check(&present(&forged, "/private/file", 5)),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn a_url_token_is_for_its_path_alone() {
        let v = verifier();
        let t = Generate {
            url: Some("/a/b.mp4"),
            acl: None,
            id: None,
            ..gen(&key(), 1000)
        }
        .token()
        .unwrap();
        assert!(v.check(&present(&t, "/a/b.mp4", 5)).is_ok());
        assert_eq!(
            v.check(&present(&t, "/a/c.mp4", 5)),
            Err(TokenError::BadSignature)
        );
    }

    fn gen(key: &hmac::Key, exp: u64) -> Generate<'_> {
        Generate {
            key,
            salt: None,
            start: None,
            exp,
            acl: Some("/*"),
            url: None,
            ip: None,
            id: None,
            data: None,
            escape_early: false,
        }
    }

    #[test]
    fn start_ip_lifetime_and_leeway() {
        let t = Generate {
            start: Some(100),
            ip: Some("192.0.2.1"),
            ..gen(&key(), 200)
        }
        .token()
        .unwrap();
        let v = verifier();
        assert_eq!(v.check(&present(&t, "/", 99)), Err(TokenError::NotYetValid));
        assert!(v.check(&present(&t, "/", 100)).is_ok());
        let mut elsewhere = present(&t, "/", 150);
        elsewhere.client = "192.0.2.2".parse().unwrap();
        assert_eq!(v.check(&elsewhere), Err(TokenError::WrongIp));
        let skewed = Verifier::new(&[KEY.into()], Algorithm::Sha256, None, 5, None, false).unwrap();
        assert!(skewed.check(&present(&t, "/", 95)).is_ok());
        assert!(skewed.check(&present(&t, "/", 205)).is_ok());
        assert_eq!(
            skewed.check(&present(&t, "/", 206)),
            Err(TokenError::Expired)
        );
        // At 95, `exp` is 105 s ahead: past a 60 s longest lifetime (and its leeway).
        let bounded =
            Verifier::new(&[KEY.into()], Algorithm::Sha256, None, 5, Some(60), false).unwrap();
        assert_eq!(
            bounded.check(&present(&t, "/", 95)),
            Err(TokenError::TooLongLived)
        );
        assert!(bounded.check(&present(&t, "/", 150)).is_ok());
    }

    #[test]
    fn bad_input_is_malformed_or_missing_never_a_panic() {
        let v = verifier();
        for bad in [
            "exp=1",
            "hmac=00",
            "exp=x~hmac=00",
            "exp=1~exp=2~hmac=00",
            "acl~hmac=00",
            "exp=1~hmac=zz",
            "exp=99999999999999999999999~hmac=00",
            "exp=1~url=/x~hmac=00",
            "exp=1~salt=s~hmac=00",
            "exp=1~hmac=00~hmac=00",
        ] {
            assert_eq!(
                v.check(&present(bad, "/", 1)),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(v.check(&present("", "/", 1)), Err(TokenError::Missing));
        let huge = format!("exp=1~data={}~hmac=00", "a".repeat(MAX_TOKEN));
        assert_eq!(v.check(&present(&huge, "/", 1)), Err(TokenError::Malformed));
    }

    #[test]
    fn escape_early_tokens_hash_the_escaped_path() {
        let t = Generate {
            url: Some("/a b/ü.mp4"),
            acl: None,
            escape_early: true,
            ..gen(&key(), 1000)
        }
        .token()
        .unwrap();
        let v = Verifier::new(&[KEY.into()], Algorithm::Sha256, None, 0, None, true).unwrap();
        assert!(v.check(&present(&t, "/a%20b/%C3%BC.mp4", 1)).is_ok());
    }

    #[test]
    fn glob_matches_stars_and_single_characters() {
        assert!(glob("/*", "/a/b/c"));
        assert!(glob("/a/*.ts", "/a/b/c.ts"));
        assert!(!glob("/a/*.ts", "/a/b/c.m4s"));
        assert!(glob("/seg?.ts", "/seg1.ts"));
        assert!(!glob("/seg?.ts", "/seg10.ts"));
        assert!(glob("*", ""));
        assert!(!glob("/a", "/ab"));
    }
}
