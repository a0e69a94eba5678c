//! Small pure helpers: container names, image references, engine timestamps.

/// The Docker container name for a task: `corral-` and the task id, with characters Docker
/// does not allow in names replaced by `_`. When anything was replaced (or the id was
/// shortened), a hash of the original id is appended so that different ids keep different
/// names.
pub fn container_name(task_id: &str) -> String {
    const MAX: usize = 120;
    let mut changed = false;
    let mut name: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                changed = true;
                '_'
            }
        })
        .collect();
    if name.len() > MAX {
        name.truncate(MAX);
        changed = true;
    }
    if changed {
        format!("corral-{name}-{:08x}", fnv1a(task_id.as_bytes()) as u32)
    } else {
        format!("corral-{name}")
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Splits an image reference into what the pull API wants: the repository and the tag (or
/// digest). A reference without either gets `latest`, so one pull never fetches every tag.
pub(crate) fn split_image(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (image[..at].to_string(), image[at + 1..].to_string())
        }
        None => (image.to_string(), "latest".to_string()),
    }
}

/// Parses the engine's RFC 3339 UTC timestamps (`2024-05-01T12:00:00.123456789Z`) into
/// seconds since the Unix epoch. `None` for anything else, including the engine's zero time
/// (year 1) which means "never".
pub(crate) fn parse_engine_time(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: i64 = t.next()?.parse().ok()?;
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_valid_and_distinct() {
        assert_eq!(container_name("web-1.a_b"), "corral-web-1.a_b");
        let a = container_name("fw/task 1");
        let b = container_name("fw_task_1");
        assert!(a.starts_with("corral-fw_task_1-"), "{a}");
        assert_ne!(a, b);
        let long = container_name(&"x".repeat(500));
        assert!(long.len() < 140, "{long}");
    }

    #[test]
    fn splits_image_references() {
        assert_eq!(
            split_image("corral/busybox:test"),
            ("corral/busybox".into(), "test".into())
        );
        assert_eq!(split_image("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            split_image("localhost:5000/a/b"),
            ("localhost:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_image("localhost:5000/a/b:1"),
            ("localhost:5000/a/b".into(), "1".into())
        );
        assert_eq!(
            split_image("a@sha256:abc"),
            ("a".into(), "sha256:abc".into())
        );
    }

    #[test]
    fn parses_engine_times() {
        assert_eq!(parse_engine_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_engine_time("2024-03-01T12:34:56.123456789Z"),
            Some(1_709_296_496)
        );
        assert_eq!(parse_engine_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_engine_time("garbage"), None);
    }
}
