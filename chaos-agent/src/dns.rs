//! Just enough of the DNS wire format (RFC 1035) to ask a server for a name's IPv4 addresses:
//! the DNS-failure fault checks that a target cannot resolve, and can again after heal.

/// A query for `name`'s A records with id `id`, recursion desired.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    Ok(q)
}

/// The IPv4 addresses in the answer to query `id`; `Err` for another id, a malformed answer or
/// an error code (`NXDOMAIN` is an error: the name is unknown).
pub fn answer(id: u16, msg: &[u8]) -> Result<Vec<std::net::Ipv4Addr>, String> {
    let short = || "a truncated DNS answer".to_string();
    let u16_at = |at: usize| -> Result<u16, String> {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(short)
    };
    if u16_at(0)? != id {
        return Err("an answer to another query".into());
    }
    let rcode = u16_at(2)? & 0x000f;
    if rcode != 0 {
        let name = match rcode {
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            5 => "REFUSED",
            _ => "an error",
        };
        return Err(format!("the server answered {name} (rcode {rcode})"));
    }
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at).ok_or_else(short)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(msg, at).ok_or_else(short)?;
        let (ty, len) = (u16_at(at)?, u16_at(at + 8)? as usize);
        let data = msg.get(at + 10..at + 10 + len).ok_or_else(short)?;
        if ty == 1 && len == 4 {
            out.push(std::net::Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Ok(out)
}

/// Where the name starting at `at` ends (labels, or a compression pointer).
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_header_labels_and_type_a() {
        let q = query(0x1234, "postgres").unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..22], b"\x08postgres\x00");
        assert_eq!(&q[22..], &[0, 1, 0, 1]);
        assert!(query(1, "a..b").is_err());
    }

    #[test]
    fn answers_give_their_addresses_through_compressed_names() {
        let mut msg = query(7, "redis").unwrap();
        msg[2] = 0x81;
        msg[3] = 0x80;
        msg[7] = 1; // one answer
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 2, 88, 0, 4, 172, 18, 0, 3]);
        assert_eq!(
            answer(7, &msg).unwrap(),
            vec![std::net::Ipv4Addr::new(172, 18, 0, 3)]
        );
        assert!(answer(8, &msg).unwrap_err().contains("another query"));
        msg[3] = 0x83;
        assert!(answer(7, &msg).unwrap_err().contains("NXDOMAIN"));
        assert!(answer(7, &msg[..5]).is_err());
    }
}
