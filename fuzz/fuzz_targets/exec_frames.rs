//! The exec WebSocket's client input: binary stream frames, JSON control messages (resize,
//! signal) and the exec query string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_api::exec::{
    decode_stream_frame, encode_stream_frame, parse_client_control, signal_number, ClientControl,
    ExecParams, FrameError, StreamFrame, TextMessage, MAX_ARGS_BYTES, STREAM_EXIT, STREAM_STDERR,
    STREAM_STDIN, STREAM_STDIN_EOF, STREAM_STDOUT,
};

fuzz_target!(|data: &[u8]| {
    frames(data);
    control(data);
    if let Ok(text) = std::str::from_utf8(data) {
        query(text);
    }
});

/// Decoding is total and exact: every frame it accepts encodes back to the same bytes (exit
/// and EOF frames may carry trailing bytes, which are ignored); encoding then decoding gives
/// the payload back.
fn frames(data: &[u8]) {
    match decode_stream_frame(data) {
        Ok(StreamFrame::Stdin(p)) => assert_eq!(encode_stream_frame(STREAM_STDIN, p), data),
        Ok(StreamFrame::Stdout(p)) => assert_eq!(encode_stream_frame(STREAM_STDOUT, p), data),
        Ok(StreamFrame::Stderr(p)) => assert_eq!(encode_stream_frame(STREAM_STDERR, p), data),
        Ok(StreamFrame::Exit(c)) => assert_eq!(data[..2], [STREAM_EXIT, c]),
        Ok(StreamFrame::StdinEof) => assert_eq!(data[0], STREAM_STDIN_EOF),
        Err(FrameError::Empty) => assert!(data.is_empty()),
        Err(FrameError::UnknownStream(id)) => assert!(id == data[0] && id > STREAM_STDIN_EOF),
        Err(FrameError::ExitWithoutCode) => assert_eq!(data, [STREAM_EXIT]),
    }
    let Some((&id, payload)) = data.split_first() else {
        return;
    };
    let id = id % (STREAM_STDIN_EOF + 1);
    let frame = encode_stream_frame(id, payload);
    let decoded = decode_stream_frame(&frame);
    let want = match id {
        STREAM_STDIN => Ok(StreamFrame::Stdin(payload)),
        STREAM_STDOUT => Ok(StreamFrame::Stdout(payload)),
        STREAM_STDERR => Ok(StreamFrame::Stderr(payload)),
        STREAM_EXIT => payload
            .first()
            .map(|&c| StreamFrame::Exit(c))
            .ok_or(FrameError::ExitWithoutCode),
        _ => Ok(StreamFrame::StdinEof),
    };
    assert_eq!(decoded, want);
}

/// A control message is recognised exactly when the bytes are a resize or signal message; what
/// it asks for is within range and survives a trip through its JSON form.
fn control(data: &[u8]) {
    let parsed = parse_client_control(data);
    let message = serde_json::from_slice::<TextMessage>(data).ok();
    let is_control = matches!(
        message,
        Some(TextMessage::Resize { .. } | TextMessage::Signal { .. })
    );
    assert_eq!(parsed.is_some(), is_control, "{parsed:?} {message:?}");
    match parsed {
        Some(ClientControl::Resize { rows, cols }) => {
            assert!(rows > 0 && cols > 0);
            let again = serde_json::to_vec(&TextMessage::Resize { cols, rows }).unwrap();
            assert_eq!(parse_client_control(&again), parsed);
        }
        Some(ClientControl::Signal(n)) => {
            assert!((1..=31).contains(&n), "signal {n}");
            // The number is what the signal's name means, in every spelling of it.
            let Some(TextMessage::Signal { signal }) = &message else {
                unreachable!()
            };
            let name = signal.trim().to_ascii_uppercase();
            let bare = name.strip_prefix("SIG").unwrap_or(&name);
            for spelling in [
                bare.to_string(),
                format!("SIG{bare}"),
                format!("sig{}", bare.to_ascii_lowercase()),
            ] {
                assert_eq!(signal_number(&spelling), Some(n), "{spelling}");
            }
            assert_eq!(wisp_api::service::parse_signal(signal), Some(n), "{signal}");
        }
        Some(ClientControl::Ignored) | None => {}
    }
}

/// The exec query string (`cmd=..&env=K=V&dir=..`): whatever is accepted is safe to hand to
/// the keeper: a command, no NUL byte anywhere, an absolute directory, argv and environment
/// within their limit, a terminal of at least 1x1.
fn query(text: &str) {
    let pairs: Vec<(&str, &str)> = text
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect();
    let Ok(p) = ExecParams::from_pairs(pairs.iter().copied()) else {
        return;
    };
    assert!(p.attach_id.is_some() || !p.cmd.is_empty());
    assert!(p.dir.starts_with('/'));
    let all = p
        .cmd
        .iter()
        .chain([&p.path, &p.dir])
        .chain(p.env.iter().flat_map(|(k, v)| [k, v]));
    for s in all {
        assert!(!s.contains('\0'), "{s:?}");
    }
    for (k, _) in &p.env {
        assert!(!k.is_empty() && !k.contains('='), "{k:?}");
    }
    let size: usize = p.cmd.iter().map(|c| c.len() + 1).sum::<usize>()
        + p.env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    assert!(size <= MAX_ARGS_BYTES);
    assert!(p.rows > 0 && p.cols > 0);
}
