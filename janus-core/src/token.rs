//! Session tokens (protocol P2): 128 random bits written as 32 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

/// A session token. Unique among live sessions with overwhelming probability;
/// the server still checks for collisions when it registers one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(u128);

/// Why a string is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token is 32 lowercase hex digits")]
pub struct TokenParseError;

impl Token {
    /// A fresh random token from the operating system's random source.
    ///
    /// Falls back to a time-and-counter mix if the OS source fails, which
    /// keeps tokens unique (the registry checks) though no longer unguessable.
    pub fn random() -> Self {
        let mut buf = [0u8; 16];
        match getrandom::fill(&mut buf) {
            Ok(()) => Token(u128::from_le_bytes(buf)),
            Err(_) => Token(fallback_random()),
        }
    }

    /// The token's 128 bits.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// A token from its 128 bits (tests and registries).
    pub fn from_u128(bits: u128) -> Self {
        Token(bits)
    }
}

fn fallback_random() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = crate::time::Timestamp::now().unix_micros();
    // SplitMix64 over the counter and the clock.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (u128::from(mix(t ^ n)) << 64) | u128::from(mix(n.wrapping_add(t.rotate_left(17))))
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for Token {
    type Err = TokenParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(TokenParseError);
        }
        u128::from_str_radix(s, 16)
            .map(Token)
            .map_err(|_| TokenParseError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_lowercase_hex_and_round_trip() {
        for _ in 0..100 {
            let t = Token::random();
            let s = t.to_string();
            assert_eq!(s.len(), 32);
            assert!(s
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(s.parse::<Token>(), Ok(t));
        }
        assert_eq!(
            Token::from_u128(1).to_string(),
            format!("{}1", "0".repeat(31))
        );
    }

    #[test]
    fn bad_tokens_are_rejected() {
        for s in [
            "",
            "abc",
            &"A".repeat(32),
            &"g".repeat(32),
            &"0".repeat(33),
            "+0000000000000000000000000000001",
        ] {
            assert_eq!(s.parse::<Token>(), Err(TokenParseError), "{s:?}");
        }
    }

    #[test]
    fn random_tokens_differ() {
        let set: std::collections::HashSet<_> = (0..1000).map(|_| Token::random()).collect();
        assert_eq!(set.len(), 1000);
    }
}
