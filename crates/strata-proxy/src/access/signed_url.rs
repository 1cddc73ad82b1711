//! Signed URLs in the style of nginx `secure_link` and CloudFront's canned policy: the
//! URL carries its expiry and an HMAC over its path and that expiry.
//!
//! `?expires=<unix seconds>&signature=<base64url, no padding, of HMAC-SHA256(key,
//! path + "\n" + expires)>`, where `path` is the request path as sent (percent-encoded,
//! without the query). Several keys may be in service at once (rotation: the new one signs,
//! the old one still opens what it signed). No IO and no clock: the time is passed in.

use aws_lc_rs::hmac;

use super::TokenError;

/// Shortest secret accepted.
pub const MIN_KEY_LEN: usize = 16;

/// How a service's signed URLs are checked.
pub struct Verifier {
    keys: Vec<hmac::Key>,
    pub expires_param: String,
    pub signature_param: String,
    leeway: u64,
    max_lifetime: Option<u64>,
}

// === impl Verifier ===

impl Verifier {
    /// `keys`: the secrets, as text (their bytes are the HMAC key).
    pub fn new(
        keys: &[String],
        expires_param: &str,
        signature_param: &str,
        leeway: u64,
        max_lifetime: Option<u64>,
    ) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("at least one key is needed".into());
        }
        if let Some(i) = keys.iter().position(|k| k.len() < MIN_KEY_LEN) {
            // An empty or tiny key (an unset template variable) would let anyone sign.
            return Err(format!("key {i} must be at least {MIN_KEY_LEN} characters"));
        }
        Ok(Self {
            keys: keys
                .iter()
                .map(|k| hmac::Key::new(hmac::HMAC_SHA256, k.as_bytes()))
                .collect(),
            expires_param: expires_param.to_string(),
            signature_param: signature_param.to_string(),
            leeway,
            max_lifetime,
        })
    }

    /// The query parameters that sign `path` until `expires` with the first key (`strata
    /// sign`).
    pub fn params(&self, path: &str, expires: u64) -> String {
        format!(
            "{}={expires}&{}={}",
            self.expires_param,
            self.signature_param,
            signature(&self.keys[0], path, expires)
        )
    }

    /// Checks the signature of `path` with `query`, at `now` (unix seconds).
    pub fn check(&self, path: &str, query: Option<&str>, now: u64) -> Result<(), TokenError> {
        let (mut expires, mut signature) = (None, None);
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = if name == self.expires_param {
                &mut expires
            } else if name == self.signature_param {
                &mut signature
            } else {
                continue;
            };
            if slot.replace(value).is_some() {
                // Given twice: which one counts would be a guess.
                return Err(TokenError::Malformed);
            }
        }
        let (expires, signature) = match (expires, signature) {
            (None, None) => return Err(TokenError::Missing),
            (Some(e), Some(s)) => (e, s),
            _ => return Err(TokenError::Malformed),
        };
        if expires.len() > 20 || signature.len() > 128 {
            return Err(TokenError::Malformed);
        }
        let exp: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let tag = data_encoding::BASE64URL_NOPAD
            .decode(signature.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        let message = format!("{path}\n{expires}");
        if !self
            .keys
            .iter()
            .any(|key| hmac::verify(key, message.as_bytes(), &tag).is_ok())
        {
            return Err(TokenError::BadSignature);
        }
        if now > exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        if self
            .max_lifetime
            .is_some_and(|max| exp > now.saturating_add(max).saturating_add(self.leeway))
        {
            return Err(TokenError::TooLongLived);
        }
        Ok(())
    }
}

/// The signature of `path` until `expires` with `key` (base64url, no padding).
pub fn sign(key: &str, path: &str, expires: u64) -> String {
    signature(
        &hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()),
        path,
        expires,
    )
}

fn signature(key: &hmac::Key, path: &str, expires: u64) -> String {
    let tag = hmac::sign(key, format!("{path}\n{expires}").as_bytes());
    data_encoding::BASE64URL_NOPAD.encode(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(keys: &[&str]) -> Verifier {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        Verifier::new(&keys, "expires", "signature", 0, None).unwrap()
    }

    fn query(key: &str, path: &str, exp: u64) -> String {
        format!("a=1&expires={exp}&signature={}", sign(key, path, exp))
    }

    #[test]
    fn a_signed_url_opens_its_path_until_it_expires() {
        let v = verifier(&["new-key-0123456789"]);
        let q = query("new-key-0123456789", "/v/a.mp4", 100);
        assert_eq!(v.check("/v/a.mp4", Some(&q), 100), Ok(()));
        assert_eq!(v.check("/v/a.mp4", Some(&q), 101), Err(TokenError::Expired));
        assert_eq!(
            v.check("/v/b.mp4", Some(&q), 50),
            Err(TokenError::BadSignature)
        );
        let later = q.replace("expires=100", "expires=200");
        assert_eq!(
            v.check("/v/a.mp4", Some(&later), 50),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn two_keys_in_service_for_rotation() {
        let v = verifier(&["new-key-0123456789", "old-key-0123456789"]);
        assert!(v
            .check("/p", Some(&query("old-key-0123456789", "/p", 9)), 1)
            .is_ok());
        assert!(v
            .check("/p", Some(&query("new-key-0123456789", "/p", 9)), 1)
            .is_ok());
        assert_eq!(
            v.check("/p", Some(&query("other-key-0123456789", "/p", 9)), 1),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn missing_doubled_or_garbled_parameters() {
        let v = verifier(&["k-key-0123456789"]);
        assert_eq!(v.check("/p", None, 1), Err(TokenError::Missing));
        assert_eq!(v.check("/p", Some("a=1"), 1), Err(TokenError::Missing));
        for bad in [
            "expires=9",
            "signature=abc",
            "expires=9&expires=10&signature=abc",
            "expires=nine&signature=abc",
            "expires=9&signature=!!!",
            "expires=99999999999999999999999&signature=abc",
        ] {
            assert_eq!(
                v.check("/p", Some(bad), 1),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn far_future_expiry_is_refused_when_a_longest_lifetime_is_set() {
        let v = Verifier::new(
            &["k-key-0123456789".into()],
            "expires",
            "signature",
            0,
            Some(3600),
        )
        .unwrap();
        assert_eq!(
            v.check("/p", Some(&query("k-key-0123456789", "/p", 10_000)), 1),
            Err(TokenError::TooLongLived)
        );
        assert!(v
            .check("/p", Some(&query("k-key-0123456789", "/p", 3601)), 1)
            .is_ok());
    }
}
