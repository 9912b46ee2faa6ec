use proptest::prelude::*;

use super::*;
use crate::proto::handshake::{self, HandshakeLimits, Parsed};

/// The offers of a request carrying each of `lines` as a
/// `Sec-WebSocket-Extensions` field, chosen with `cfg`.
fn choose(lines: &[&str], cfg: &DeflateConfig) -> Option<String> {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for l in lines {
        req.push_str("Sec-WebSocket-Extensions: ");
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let Ok(Parsed::Complete { value, .. }) =
        handshake::parse_request(req.as_bytes(), &HandshakeLimits::default())
    else {
        panic!("request did not parse");
    };
    negotiate(value.extensions(), cfg).map(|p| p.response())
}

fn offer(s: &str) -> Result<Offer, OfferError> {
    parse_offer(&Extension::parse(s))
}

const PLAIN: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

#[test]
fn a_bare_offer_is_accepted_with_both_no_context_takeover() {
    let cfg = DeflateConfig::default();
    assert_eq!(
        choose(&["permessage-deflate"], &cfg).as_deref(),
        Some(PLAIN)
    );
}

#[test]
fn the_browser_offer_limits_the_client_window() {
    // What Chromium and Firefox send.
    let cfg = DeflateConfig::default().with_client_max_window_bits(10);
    assert_eq!(
        choose(&["permessage-deflate; client_max_window_bits"], &cfg).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10")
    );
    let p = negotiate(
        [Extension::parse(
            "permessage-deflate; client_max_window_bits",
        )],
        &cfg,
    );
    assert_eq!(p.map(|p| p.client_max_window_bits), Some(10));
}

#[test]
fn a_client_window_hint_below_ours_is_kept() {
    let cfg = DeflateConfig::default();
    let p = negotiate(
        [Extension::parse(
            "permessage-deflate; client_max_window_bits=\"9\"",
        )],
        &cfg,
    )
    .unwrap();
    assert_eq!(p.client_max_window_bits, 9);
    assert!(p.response().ends_with("; client_max_window_bits=9"));
}

#[test]
fn without_client_max_window_bits_the_answer_does_not_name_it() {
    // §7.1.2.2: the response "MUST NOT include" it then.
    let cfg = DeflateConfig::default().with_client_max_window_bits(9);
    let p = negotiate([Extension::parse("permessage-deflate")], &cfg).unwrap();
    assert_eq!(p.client_max_window_bits, 15);
    assert!(!p.response().contains("client_max_window_bits"));
}

#[test]
fn client_context_takeover_is_kept_when_configured_and_not_offered() {
    let cfg = DeflateConfig::default().with_client_no_context_takeover(false);
    let p = negotiate([Extension::parse("permessage-deflate")], &cfg).unwrap();
    assert!(!p.client_no_context_takeover);
    assert_eq!(
        p.response(),
        "permessage-deflate; server_no_context_takeover"
    );
    // Offered, it is acknowledged.
    let p = negotiate(
        [Extension::parse(
            "permessage-deflate; client_no_context_takeover",
        )],
        &cfg,
    )
    .unwrap();
    assert!(p.client_no_context_takeover);
}

#[test]
fn a_smaller_server_window_than_ours_is_accepted_and_announced() {
    let cfg = DeflateConfig::default();
    assert_eq!(
        choose(&["permessage-deflate; server_max_window_bits=10"], &cfg).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    // A larger one than ours gets ours.
    let cfg = DeflateConfig::default().with_server_max_window_bits(10);
    assert_eq!(
        choose(&["permessage-deflate; server_max_window_bits=12"], &cfg).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
}

#[test]
fn server_no_context_takeover_is_honoured_when_offered_and_forced_for_8_bits() {
    let cfg = DeflateConfig::default().with_server_no_context_takeover(false);
    assert_eq!(
        choose(&["permessage-deflate; server_no_context_takeover"], &cfg).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    assert_eq!(
        choose(&["permessage-deflate"], &cfg).as_deref(),
        Some("permessage-deflate; client_no_context_takeover")
    );
    assert_eq!(
        choose(&["permessage-deflate; server_max_window_bits=8"], &cfg).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8")
    );
    assert_eq!(
        choose(&["permessage-deflate; server_max_window_bits=9"], &cfg).as_deref(),
        Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=9")
    );
}

#[test]
fn offers_over_several_lines_are_tried_in_order() {
    let cfg = DeflateConfig::default();
    let lines = [
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=12",
    ];
    assert!(choose(&lines, &cfg)
        .unwrap()
        .ends_with("client_max_window_bits=12"));
}

#[test]
fn other_extensions_alone_are_declined() {
    let cfg = DeflateConfig::default();
    assert_eq!(choose(&["x-foo; a=1", "deflate-frame"], &cfg), None);
    assert_eq!(choose(&[], &cfg), None);
}

#[test]
fn invalid_offers_are_declined_not_answered() {
    // RFC 7692 §7: "A server MUST decline an extension negotiation offer for
    // this extension if" it has an unknown parameter, an invalid value, or
    // a parameter twice. Declined offers leave the next one a chance.
    let cfg = DeflateConfig::default();
    for bad in [
        "permessage-deflate; foo",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=\"\"",
        "permessage-deflate; client_max_window_bits=",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; client_max_window_bits=1 0",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; client_max_window_bits; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; SERVER_NO_CONTEXT_TAKEOVER",
        "permessage-deflate; =5",
    ] {
        assert!(offer(bad).is_err(), "{bad} parsed");
        assert_eq!(choose(&[bad], &cfg), None, "{bad} accepted");
        let both = format!("{bad}, permessage-deflate");
        assert_eq!(choose(&[&both], &cfg).as_deref(), Some(PLAIN), "{bad}");
    }
}

#[test]
fn offer_parsing() {
    assert_eq!(
        offer("permessage-deflate; client_max_window_bits; server_max_window_bits=\"12\""),
        Ok(Offer {
            server_max_window_bits: Some(12),
            client_max_window_bits: Some(None),
            ..Offer::default()
        })
    );
    assert_eq!(
        offer("Permessage-Deflate;server_no_context_takeover ;client_no_context_takeover"),
        Ok(Offer {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..Offer::default()
        })
    );
    assert_eq!(offer("x-foo"), Err(OfferError::OtherExtension));
    assert_eq!(
        offer("permessage-deflate; client_max_window_bits=8; client_max_window_bits=9"),
        Err(OfferError::DuplicateParameter("client_max_window_bits"))
    );
}

fn param() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("server_no_context_takeover".to_owned()),
        Just("client_no_context_takeover".to_owned()),
        (7u8..17).prop_map(|b| format!("server_max_window_bits={b}")),
        (7u8..17).prop_map(|b| format!("client_max_window_bits=\"{b}\"")),
        Just("client_max_window_bits".to_owned()),
        Just("server_max_window_bits".to_owned()),
        "[a-z_=\"0-9]{0,12}",
    ]
}

proptest! {
    /// The negotiation matrix: whatever is offered, an accepted offer is
    /// the first valid one the configuration allows, and the answer is
    /// consistent with it.
    #[test]
    fn the_choice_follows_the_rules(
        offers in prop::collection::vec(prop::collection::vec(param(), 0..5), 0..4),
        server_bits in 8u8..=15,
        client_bits in 8u8..=15,
        snct in any::<bool>(),
        cnct in any::<bool>(),
    ) {
        let cfg = DeflateConfig::default()
            .with_server_max_window_bits(server_bits)
            .with_client_max_window_bits(client_bits)
            .with_server_no_context_takeover(snct)
            .with_client_no_context_takeover(cnct);
        let elements: Vec<String> = offers
            .iter()
            .map(|ps| std::iter::once("permessage-deflate".to_owned()).chain(ps.iter().cloned()).collect::<Vec<_>>().join("; "))
            .collect();
        let chosen = negotiate(elements.iter().map(|e| Extension::parse(e)), &cfg);
        let first_ok = elements.iter().find(|e| offer(e).is_ok());
        prop_assert_eq!(chosen.is_some(), first_ok.is_some());
        if let (Some(p), Some(e)) = (chosen, first_ok) {
            let o = offer(e).unwrap();
            let bits = o.server_max_window_bits.map_or(server_bits, |b| b.min(server_bits));
            prop_assert_eq!(p.server_no_context_takeover, snct || o.server_no_context_takeover || bits < 9);
            prop_assert_eq!(p.client_no_context_takeover, cnct || o.client_no_context_takeover);
            prop_assert_eq!(p.server_max_window_bits, bits);
            prop_assert!(p.client_max_window_bits <= 15 && p.client_max_window_bits >= 8);
            match o.client_max_window_bits {
                None => prop_assert_eq!(p.client_max_window_bits, 15),
                Some(h) => prop_assert!(p.client_max_window_bits <= client_bits.min(h.unwrap_or(15))),
            }
            let r = p.response();
            prop_assert_eq!(r.contains("client_max_window_bits"), o.client_max_window_bits.is_some());
            // The answer is itself a valid offer-syntax element.
            prop_assert!(offer(&r).is_ok());
        }
    }

    /// Nothing in an extension header makes the negotiation panic.
    #[test]
    fn any_header_is_answered(s in ".{0,80}", line in "[ -~]{0,80}") {
        let _ = negotiate([Extension::parse(&s)], &DeflateConfig::default());
        let _ = choose(&[line.trim()], &DeflateConfig::default());
    }
}
