//! "did you mean" for names from a closed list.

/// The candidate `input` most likely misspells, if one is close enough.
///
/// In order: the same name up to case and `-`/`_`; the nearest by edit distance, within a third
/// of its length (at least 1); the only candidate containing the input, or contained in it.
pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let normalised = input.to_ascii_lowercase().replace(['-', ' '], "_");
    if let Some(exact) = candidates.iter().find(|c| **c == normalised) {
        return Some(exact);
    }
    let nearest = candidates
        .iter()
        .map(|c| (edit_distance(&normalised, c), *c))
        .filter(|(distance, c)| *distance <= (c.chars().count() / 3).max(1))
        .min_by_key(|(distance, _)| *distance);
    if let Some((_, c)) = nearest {
        return Some(c);
    }
    if normalised.len() < 3 {
        return None;
    }
    let mut containing = candidates
        .iter()
        .filter(|c| c.contains(normalised.as_str()) || normalised.contains(**c));
    match (containing.next(), containing.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// `unknown WHAT `INPUT`[, did you mean `X`?]` and, on a second line, the accepted names.
pub fn unknown(what: &str, input: &str, candidates: &[&str]) -> String {
    let mut message = format!("unknown {what} `{input}`");
    if let Some(guess) = did_you_mean(input, candidates) {
        message += &format!(", did you mean `{guess}`?");
    }
    message + "\nexpected one of: " + &listing(candidates)
}

/// `` `a`, `b`, `c` ``.
pub fn listing(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Edit distance over chars where swapping two neighbours counts as one edit (optimal string
/// alignment): `stroe` is one edit from `store`, as a typist would count it.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FAULT_KINDS;

    const TARGETS: &[&str] = &["postgres", "redis", "orders", "nginx"];

    const KEYS: &[&str] = &[
        "fault",
        "faults",
        "target",
        "duration",
        "recover_within",
        "observer",
        "workload",
        "snapshot",
    ];

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("kill", "kill"), 0);
        assert_eq!(edit_distance("kil", "kill"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
    }

    #[test]
    fn typos_find_the_option() {
        assert_eq!(
            did_you_mean("recover_whithin", KEYS),
            Some("recover_within")
        );
        assert_eq!(
            did_you_mean("recovery_within", KEYS),
            Some("recover_within")
        );
        assert_eq!(did_you_mean("recover", KEYS), Some("recover_within"));
        assert_eq!(did_you_mean("durration", KEYS), Some("duration"));
        assert_eq!(did_you_mean("snapshots", KEYS), Some("snapshot"));
        assert_eq!(did_you_mean("targte", KEYS), Some("target"));
    }

    #[test]
    fn nearest_wins_over_the_first() {
        // `fault` and `faults` are both within reach of `faultss`; the nearer is `faults`.
        assert_eq!(did_you_mean("faultss", KEYS), Some("faults"));
        assert_eq!(did_you_mean("falt", KEYS), Some("fault"));
    }

    #[test]
    fn typos_find_the_fault() {
        assert_eq!(did_you_mean("kil", FAULT_KINDS), Some("kill"));
        assert_eq!(did_you_mean("Kill", FAULT_KINDS), Some("kill"));
        assert_eq!(
            did_you_mean("network-partition", FAULT_KINDS),
            Some("network_partition")
        );
        assert_eq!(
            did_you_mean("partition", FAULT_KINDS),
            Some("network_partition")
        );
        assert_eq!(did_you_mean("oom", FAULT_KINDS), Some("memory_oom"));
        assert_eq!(did_you_mean("latncy", FAULT_KINDS), Some("latency"));
        assert_eq!(did_you_mean("kill_container", FAULT_KINDS), Some("kill"));
        assert_eq!(did_you_mean("postgress", TARGETS), Some("postgres"));
        assert_eq!(did_you_mean("stroe", &["store", "web"]), Some("store"));
        assert_eq!(did_you_mean("redsi", TARGETS), Some("redis"));
        assert_eq!(did_you_mean("pg", TARGETS), None);
    }

    #[test]
    fn no_guess_when_nothing_is_close() {
        assert_eq!(did_you_mean("explode", FAULT_KINDS), None);
        assert_eq!(did_you_mean("x", KEYS), None);
        assert_eq!(did_you_mean("mysql", TARGETS), None);
        // Contained in two candidates: no single guess.
        assert_eq!(did_you_mean("fau", KEYS), None);
    }

    #[test]
    fn unknown_message_lists_the_names() {
        assert_eq!(
            unknown("target", "postgress", TARGETS),
            "unknown target `postgress`, did you mean `postgres`?\n\
             expected one of: `postgres`, `redis`, `orders`, `nginx`"
        );
        assert_eq!(
            unknown("target", "mysql", TARGETS),
            "unknown target `mysql`\nexpected one of: `postgres`, `redis`, `orders`, `nginx`"
        );
    }
}
