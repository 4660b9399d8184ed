//! Plain-word errors for the command-line tools' numbers, sizes and
//! durations (feature `cli`): a bad value says what the setting takes and
//! where the value came from, the flag (`--limit must be a whole number of
//! at least 1 (got 0)`) or its environment variable (`JANUS_QUEUE_LIMIT=abc
//! (the environment form of --queue-limit): must be ...`), instead of the
//! parser's own words about types.

use std::ffi::OsStr;
use std::num::IntErrorKind;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, Command};

/// One kind of value's parser: the value, or what it must be
/// ("must be a whole number of at least 1").
pub type Parse<T> = fn(&str) -> Result<T, String>;

/// clap's value parser for a [`Parse`]: its error names the flag, or the
/// environment variable when the value came from there.
#[derive(Clone)]
pub struct Worded<T>(pub Parse<T>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Worded<T> {
    type Value = T;

    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        self.parse_ref_(cmd, arg, value, ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &Command,
        arg: Option<&Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        (self.0)(&text).map_err(|why| {
            let flag = arg
                .and_then(Arg::get_long)
                .map_or_else(|| "the value".to_owned(), |long| format!("--{long}"));
            let message = match arg.and_then(Arg::get_env) {
                Some(var) if source == ValueSource::EnvVariable => format!(
                    "{}={text} (the environment form of {flag}): {why}",
                    var.to_string_lossy()
                ),
                _ => format!("{flag} {why} (got {text})"),
            };
            clap::Error::raw(ErrorKind::ValueValidation, message + "\n").with_cmd(cmd)
        })
    }
}

/// A whole number of at least `LEAST` that fits in `T` (an unsigned integer).
///
/// # Errors
/// What the number must be.
pub fn whole<T: TryFrom<u64>, const LEAST: u64>(text: &str) -> Result<T, String> {
    let range = || format!("must be a whole number from {LEAST} to {}", most::<T>());
    match text.trim().parse::<u64>() {
        Ok(n) if n >= LEAST => T::try_from(n).map_err(|_| range()),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(range()),
        _ if LEAST == 0 => Err("must be a whole number (0 or more)".to_owned()),
        _ => Err(format!("must be a whole number of at least {LEAST}")),
    }
}

/// The largest value of `T`, an unsigned integer of at most 64 bits.
fn most<T: TryFrom<u64>>() -> u64 {
    [u64::MAX, u32::MAX.into(), u16::MAX.into(), u8::MAX.into()]
        .into_iter()
        .find(|&m| T::try_from(m).is_ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::whole;

    #[test]
    fn whole_numbers_say_what_they_must_be() {
        assert_eq!(whole::<u32, 1>("7"), Ok(7));
        assert_eq!(
            whole::<u32, 1>("0"),
            Err("must be a whole number of at least 1".to_owned())
        );
        assert_eq!(
            whole::<u32, 0>("-1"),
            Err("must be a whole number (0 or more)".to_owned())
        );
        assert_eq!(
            whole::<u8, 1>("300"),
            Err("must be a whole number from 1 to 255".to_owned())
        );
        assert_eq!(
            whole::<usize, 1>("99999999999999999999"),
            Err(format!("must be a whole number from 1 to {}", u64::MAX))
        );
    }
}
