//! `Accept-Encoding` (RFC 9110 §12.5.3) reduced to the one coding Strata would send.
//!
//! Clients write this field in hundreds of ways (`gzip, deflate, br`, `br;q=1.0, gzip;q=0.8,
//! *;q=0.1`, ...). Keyed as sent, every spelling would be its own stored variant under
//! `Vary: Accept-Encoding`. Reduced to one of four buckets (`br`, `zstd`, `gzip`, none), a
//! URL has at most four variants, and the origin sees the same four spellings.

use http::header::{HeaderMap, ACCEPT_ENCODING};

/// A content coding Strata can produce, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
    Identity,
}

impl Coding {
    /// The token in `Content-Encoding` / `Accept-Encoding`; empty for identity.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
            Coding::Identity => "",
        }
    }

    /// The coding a `Content-Encoding` value names, if it is one of ours.
    pub fn from_token(token: &str) -> Option<Coding> {
        let token = token.trim();
        [Coding::Br, Coding::Zstd, Coding::Gzip]
            .into_iter()
            .find(|c| token.eq_ignore_ascii_case(c.as_str()))
            .or_else(|| token.eq_ignore_ascii_case("x-gzip").then_some(Coding::Gzip))
    }
}

/// Server preference among codings the client rates equally: smallest output first.
const PREFERENCE: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

/// The coding to answer a request with. No field (or one that accepts none of ours):
/// identity.
pub fn preferred(headers: &HeaderMap) -> Coding {
    let mut fields = headers.get_all(ACCEPT_ENCODING).iter().peekable();
    if fields.peek().is_none() {
        return Coding::Identity;
    }
    // Weight (in thousandths) per coding of ours, and the `*` weight for the rest.
    let mut weights: [Option<u16>; 3] = [None; 3];
    let mut star = None;
    for field in fields {
        let Ok(text) = field.to_str() else { continue };
        for member in text.split(',') {
            let mut parts = member.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                if let Some((name, value)) = param.split_once('=') {
                    if name.trim().eq_ignore_ascii_case("q") {
                        q = parse_qvalue(value.trim());
                    }
                }
            }
            // An unreadable weight drops the member (RFC 9110 §12.4.2 leaves it invalid).
            let Some(q) = q else { continue };
            if token == "*" {
                star = Some(q);
            } else if let Some(coding) = Coding::from_token(token) {
                let i = PREFERENCE.iter().position(|c| *c == coding).unwrap_or(0);
                // The first mention of a coding counts.
                weights[i].get_or_insert(q);
            }
        }
    }
    let mut best = (0u16, Coding::Identity);
    for (i, coding) in PREFERENCE.into_iter().enumerate() {
        let q = weights[i].or(star).unwrap_or(0);
        if q > best.0 {
            best = (q, coding);
        }
    }
    best.1
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` in thousandths.
fn parse_qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(values: &[&str]) -> Coding {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT_ENCODING, v.parse().unwrap());
        }
        preferred(&h)
    }

    #[test]
    fn rfc9110_12_5_3_no_field_means_identity_here() {
        assert_eq!(pick(&[]), Coding::Identity);
    }

    #[test]
    fn rfc9110_12_5_3_the_highest_weight_wins() {
        assert_eq!(pick(&["gzip;q=1.0, br;q=0.5"]), Coding::Gzip);
        assert_eq!(pick(&["gzip;q=0.2, zstd;q=0.9, br;q=0.5"]), Coding::Zstd);
    }

    #[test]
    fn rfc9110_12_5_3_equal_weights_take_the_servers_preference() {
        assert_eq!(pick(&["gzip, deflate, br"]), Coding::Br);
        assert_eq!(pick(&["gzip, zstd"]), Coding::Zstd);
    }

    #[test]
    fn rfc9110_12_5_3_q0_means_not_acceptable() {
        assert_eq!(pick(&["br;q=0, gzip"]), Coding::Gzip);
        assert_eq!(pick(&["br;q=0, gzip;q=0"]), Coding::Identity);
    }

    #[test]
    fn rfc9110_12_5_3_star_covers_codings_not_listed() {
        assert_eq!(pick(&["*"]), Coding::Br);
        assert_eq!(pick(&["br;q=0, *;q=0.5"]), Coding::Zstd);
        assert_eq!(pick(&["*;q=0"]), Coding::Identity);
    }

    #[test]
    fn rfc9110_12_5_3_unknown_codings_and_identity_are_not_ours() {
        assert_eq!(pick(&["deflate, compress, identity"]), Coding::Identity);
        assert_eq!(pick(&["x-gzip"]), Coding::Gzip);
    }

    #[test]
    fn rfc9110_12_4_2_invalid_weights_drop_the_member() {
        assert_eq!(pick(&["br;q=2, gzip;q=0.1"]), Coding::Gzip);
        assert_eq!(pick(&["br;q=0.12345"]), Coding::Identity);
        assert_eq!(pick(&["br;q=1.000"]), Coding::Br);
        assert_eq!(pick(&["br;q=abc"]), Coding::Identity);
    }

    #[test]
    fn fields_and_case_combine() {
        assert_eq!(pick(&["GZIP", "BR;Q=0.5"]), Coding::Gzip);
        assert_eq!(pick(&[", ,br"]), Coding::Br);
    }
}
