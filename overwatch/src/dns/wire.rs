//! Reading a DNS message's sections in place, for what the hickory path must do to the
//! bytes itself: find a query's OPT when hickory cannot parse the query (its FORMERR
//! still carries an OPT, RFC 6891 §7), and truncate a response that does not fit the
//! requestor's payload to its header, question and OPT (RFC 2181 §9: no partial RRsets,
//! and so no partial records).

const HEADER: usize = 12;
const TYPE_OPT: u16 = 41;

fn count(message: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *message.get(at)?,
        *message.get(at + 1)?,
    ])))
}

/// The end of the name at `i` (a pointer ends it).
fn skip_name(message: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *message.get(i)?;
        match len {
            0 => return Some(i + 1),
            l if l & 0xC0 == 0xC0 => return Some(i + 2),
            l if l & 0xC0 != 0 => return None,
            l => i += 1 + usize::from(l),
        }
    }
}

/// The end of the question section.
fn question_end(message: &[u8]) -> Option<usize> {
    let mut i = HEADER;
    for _ in 0..count(message, 4)? {
        i = skip_name(message, i)? + 4;
    }
    (i <= message.len()).then_some(i)
}

/// The record at `i`: its type, where its TTL field starts, and its end.
fn record(message: &[u8], i: usize) -> Option<(u16, usize, usize)> {
    let fixed = skip_name(message, i)?;
    let rtype = count(message, fixed)? as u16;
    let rdlen = count(message, fixed + 8)?;
    let end = fixed + 10 + rdlen;
    (end <= message.len()).then_some((rtype, fixed + 4, end))
}

/// The end of the first question, if there is one and it can be read.
pub fn first_question_end(message: &[u8]) -> Option<usize> {
    if count(message, 4)? == 0 {
        return None;
    }
    let end = skip_name(message, HEADER)? + 4;
    (end <= message.len()).then_some(end)
}

/// The first OPT record (root owner) in `query`'s additional section, if the sections
/// before it can be walked: where its TTL field starts, and its end.
fn opt_of(query: &[u8]) -> Option<(usize, usize)> {
    let mut i = question_end(query)?;
    let before = count(query, 6)? + count(query, 8)?;
    for n in 0..before + count(query, 10)? {
        let (rtype, ttl, end) = record(query, i)?;
        if n >= before && rtype == TYPE_OPT && query.get(i) == Some(&0) {
            return Some((ttl, end));
        }
        i = end;
    }
    None
}

/// The data of the first COOKIE option in `query`'s OPT record, if it can be found.
pub fn query_cookie(query: &[u8]) -> Option<&[u8]> {
    let (ttl, end) = opt_of(query)?;
    let mut o = ttl + 6; // past TTL (4) and RDLENGTH (2)
    while o + 4 <= end {
        let code = count(query, o)?;
        let len = count(query, o + 2)?;
        let data = query.get(o + 4..o + 4 + len)?;
        if code == usize::from(super::cookie::OPTION_COOKIE) {
            return Some(data);
        }
        o += 4 + len;
    }
    None
}

/// A query's OPT record, as far as the message can be walked: its DO bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryOpt {
    /// The DO bit (copied into the response's OPT, RFC 3225 §3).
    pub dnssec_ok: bool,
}

/// The first OPT record in `query`'s additional section, if the sections before it can
/// be walked.
pub fn query_opt(query: &[u8]) -> Option<QueryOpt> {
    let (ttl, _) = opt_of(query)?;
    Some(QueryOpt {
        dnssec_ok: query.get(ttl + 2)? & 0x80 != 0,
    })
}

/// An OPT record: root owner, our payload size, extended rcode 0, version 0, the DO bit
/// as asked, no options.
pub fn opt_record(payload: u16, dnssec_ok: bool) -> [u8; 11] {
    let mut opt = [0u8; 11];
    opt[1..3].copy_from_slice(&TYPE_OPT.to_be_bytes());
    opt[3..5].copy_from_slice(&payload.to_be_bytes());
    if dnssec_ok {
        opt[7] = 0x80;
    }
    opt
}

/// `response` cut to its header (TC set, no answer or authority records), question and
/// OPT record: what a UDP requestor gets when the whole response does not fit, so it
/// retries over TCP. `None` if the response cannot be walked.
pub fn truncated(response: &[u8]) -> Option<Vec<u8>> {
    let question = question_end(response)?;
    let mut i = question;
    for _ in 0..count(response, 6)? + count(response, 8)? {
        i = record(response, i)?.2;
    }
    let mut opt = None;
    for _ in 0..count(response, 10)? {
        let (rtype, _, end) = record(response, i)?;
        if rtype == TYPE_OPT {
            opt = Some(&response[i..end]);
        }
        i = end;
    }
    let mut out = Vec::with_capacity(question + opt.map_or(0, <[u8]>::len));
    out.extend_from_slice(&response[..question]);
    out[2] |= 0x02; // TC
    out[6..10].fill(0);
    out[10..12].copy_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    if let Some(opt) = opt {
        out.extend_from_slice(opt);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a.test A` with one answer of 4 bytes and an OPT with DO.
    fn message() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 1];
        m.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        m.extend_from_slice(&opt_record(1232, true));
        m
    }

    #[test]
    fn truncation_keeps_header_question_and_opt_only() {
        let cut = truncated(&message()).expect("walks");
        let mut want = vec![0x12, 0x34, 0x86, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        want.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        want.extend_from_slice(&opt_record(1232, true));
        assert_eq!(cut, want);
        assert_eq!(query_opt(&message()), Some(QueryOpt { dnssec_ok: true }));
        // A message that ends inside a record cannot be walked.
        let short = &message()[..30];
        assert_eq!(truncated(short), None);
        assert_eq!(query_opt(short), None);
    }

    #[test]
    fn the_first_cookie_of_the_opt_is_found() {
        let options = [
            &[0u8, 8, 0, 0][..],
            &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
            &[0, 10, 0, 1, 9],
        ]
        .concat();
        let query = crate::dns::test_support::query(1, 0x0100, "a.test", 1, 1, Some(&options));
        assert_eq!(query_cookie(&query), Some(&[1u8, 2, 3, 4, 5, 6, 7, 8][..]));
        let plain = crate::dns::test_support::query(1, 0x0100, "a.test", 1, 1, Some(&[]));
        assert_eq!(query_cookie(&plain), None);
        assert_eq!(query_opt(&plain), Some(QueryOpt { dnssec_ok: false }));
    }
}
