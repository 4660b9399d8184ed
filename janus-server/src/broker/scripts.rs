//! The Lua scripts the backplane runs inside Redis, and the parsing of
//! their replies.
//!
//! A script runs atomically: no other command runs between its calls, so a
//! publish's offset, its history entry and its pub/sub message are one step
//! that happens entirely or not at all (Redis refuses a script up front when
//! it is out of memory, thanks to the `#!lua` shebang of Redis 7). Scripts
//! are loaded on every new connection (`SCRIPT LOAD`), which also checks
//! that the server is Redis 7 or newer, and then run with `EVALSHA`.

use redis::{Script, Value};

/// Assigns the next offset of a topic, appends the message to the topic's
/// stream and publishes it, all at once.
///
/// `KEYS`: the topic's meta hash, its stream. `ARGV`: the topic channel, an
/// epoch to use if the topic has none yet, the message body, the history
/// size (`MAXLEN`), the history TTL in milliseconds (0: none).
/// Returns `{offset, epoch}`.
///
/// A topic without a meta hash starts a new epoch and drops any stream left
/// over, so an epoch always names exactly one numbering.
const PUBLISH: &str = r"#!lua
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = string.format('%d', redis.call('HINCRBY', KEYS[1], 'offset', 1))
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0', 'm', ARGV[3])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PUBLISH', ARGV[1], offset .. ' ' .. epoch .. ' ' .. ARGV[3])
return {tonumber(offset), epoch}
";

/// Reads a topic's epoch, latest offset and up to `count` history entries
/// from a given offset on, in one consistent view.
///
/// `KEYS`: the topic's meta hash, its stream. `ARGV`: the first offset
/// wanted, the most entries to return (0: none). Returns
/// `{epoch or '', latest offset, {{id, {field, value, …}}, …}}`.
const RANGE: &str = r"#!lua flags=no-writes
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
if not meta[1] then
  return {'', 0, {}}
end
local entries = {}
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {meta[1], tonumber(meta[2]), entries}
";

/// Where a topic stands when a node's interest in it begins: its epoch and
/// latest offset. A topic never published (or whose history expired) gets
/// its epoch here, so that every node hands its subscribers the epoch the
/// topic's first messages will carry (X1).
///
/// `KEYS`: the topic's meta hash, its stream. `ARGV`: an epoch to use if
/// the topic has none, the history TTL in milliseconds (0: none). Returns
/// `{epoch, latest offset}`.
const OPEN: &str = r"#!lua
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
return {epoch, tonumber(redis.call('HGET', KEYS[1], 'offset'))}
";

/// Deletes a session's registration only if it still names this node (the
/// session may have moved to another node since).
///
/// `KEYS`: the session key. `ARGV`: this node's id.
const RELEASE: &str = r"#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The backplane's scripts, hashed once.
#[derive(Debug)]
pub struct Scripts {
    /// See [`PUBLISH`].
    pub publish: Script,
    /// See [`RANGE`].
    pub range: Script,
    /// See [`OPEN`].
    pub open: Script,
    /// See [`RELEASE`].
    pub release: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            publish: Script::new(PUBLISH),
            range: Script::new(RANGE),
            open: Script::new(OPEN),
            release: Script::new(RELEASE),
        }
    }
}

impl Scripts {
    /// Every script, for `SCRIPT LOAD` on a new connection.
    pub fn all(&self) -> [&Script; 4] {
        [&self.publish, &self.range, &self.open, &self.release]
    }
}

/// What [`RANGE`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeReply {
    /// The topic's epoch; `None` when the topic has no history at all.
    pub epoch: Option<String>,
    /// The topic's latest offset (0 without history).
    pub latest: u64,
    /// `(offset, body)` of the entries read, in offset order.
    pub entries: Vec<(u64, Vec<u8>)>,
}

/// Why a script reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
pub struct ReplyError(&'static str);

fn bytes(value: Value) -> Result<Vec<u8>, ReplyError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        _ => Err(ReplyError("expected a string")),
    }
}

fn int(value: &Value) -> Result<u64, ReplyError> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| ReplyError("negative offset")),
        _ => Err(ReplyError("expected an integer")),
    }
}

fn array(value: Value) -> Result<Vec<Value>, ReplyError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(ReplyError("expected an array")),
    }
}

/// The offset of a stream entry id `OFFSET-0`.
fn entry_offset(id: &[u8]) -> Result<u64, ReplyError> {
    std::str::from_utf8(id)
        .ok()
        .and_then(|id| id.strip_suffix("-0"))
        .and_then(|n| n.parse().ok())
        .ok_or(ReplyError("stream entry id is not OFFSET-0"))
}

/// One stream entry `[id, [field, value, …]]` → `(offset, value of m)`.
fn entry(value: Value) -> Result<(u64, Vec<u8>), ReplyError> {
    let mut parts = array(value)?.into_iter();
    let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
        return Err(ReplyError("short stream entry"));
    };
    let offset = entry_offset(&bytes(id)?)?;
    let mut fields = array(fields)?.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if bytes(name)? == b"m" {
            return Ok((offset, bytes(value)?));
        }
    }
    Err(ReplyError("stream entry without field m"))
}

impl RangeReply {
    /// Parses the reply of [`RANGE`].
    ///
    /// # Errors
    /// When the reply does not have the script's shape.
    pub fn parse(value: Value) -> Result<RangeReply, ReplyError> {
        let mut parts = array(value)?.into_iter();
        let (Some(epoch), Some(latest), Some(entries)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ReplyError("short range reply"));
        };
        let epoch = String::from_utf8(bytes(epoch)?).map_err(|_| ReplyError("epoch not UTF-8"))?;
        Ok(RangeReply {
            epoch: (!epoch.is_empty()).then_some(epoch),
            latest: int(&latest)?,
            entries: array(entries)?
                .into_iter()
                .map(entry)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn a_range_reply_is_parsed() {
        let reply = Value::Array(vec![
            s("ep"),
            Value::Int(9),
            Value::Array(vec![
                Value::Array(vec![s("8-0"), Value::Array(vec![s("m"), s("b8")])]),
                Value::Array(vec![
                    s("9-0"),
                    Value::Array(vec![s("x"), s("?"), s("m"), s("b9")]),
                ]),
            ]),
        ]);
        assert_eq!(
            RangeReply::parse(reply),
            Ok(RangeReply {
                epoch: Some("ep".into()),
                latest: 9,
                entries: vec![(8, b"b8".to_vec()), (9, b"b9".to_vec())],
            })
        );
        let empty = Value::Array(vec![s(""), Value::Int(0), Value::Array(vec![])]);
        assert_eq!(RangeReply::parse(empty), Ok(RangeReply::default()));
    }

    #[test]
    fn a_malformed_range_reply_is_an_error() {
        for bad in [
            Value::Int(1),
            Value::Array(vec![s("ep"), Value::Int(1)]),
            Value::Array(vec![s("ep"), Value::Int(-1), Value::Array(vec![])]),
            Value::Array(vec![
                s("ep"),
                Value::Int(1),
                Value::Array(vec![Value::Array(vec![
                    s("1-1"),
                    Value::Array(vec![s("m"), s("b")]),
                ])]),
            ]),
            Value::Array(vec![
                s("ep"),
                Value::Int(1),
                Value::Array(vec![Value::Array(vec![
                    s("1-0"),
                    Value::Array(vec![s("z"), s("b")]),
                ])]),
            ]),
        ] {
            assert!(RangeReply::parse(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
