//! Makes the Unix socket usable by gRPC clients that send the socket's path
//! as the HTTP/2 `:authority`.
//!
//! grpcurl (grpc-go's dialer with a custom address), grpc-java and Python
//! grpcio (which sends the %-encoded path) put the socket path, e.g.
//! `/run/berth/api.sock`, in `:authority`. That is not a valid URI
//! authority, and the `h2` crate under tonic checks it while decoding the
//! HEADERS frame: it answers `RST_STREAM(PROTOCOL_ERROR)` ("malformed
//! headers: malformed authority … invalid uri character") before hyper,
//! tower or tonic see a request, and no server option turns the check off.
//! So the fix has to sit below h2, on the bytes: this module wraps each
//! accepted Unix connection and, on the way in, re-encodes every request
//! header block, replacing an `:authority` that is not a valid authority
//! with `localhost`. Valid authorities and all other frames pass unchanged;
//! the server's replies are not touched.
//!
//! HPACK is stateful, so every header block is decoded (mirroring the
//! client's dynamic table) and re-encoded without the dynamic table
//! (literal fields, never indexed into the server's table), which keeps the
//! server's decoder in step whatever the client did. A client that breaks
//! the HTTP/2 framing rules gets its connection closed.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a client must send first in HTTP/2 with prior knowledge.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload a client may send: the HTTP/2 default of
/// SETTINGS_MAX_FRAME_SIZE, which tonic's server keeps.
const MAX_FRAME: usize = 16_384;
/// The HPACK dynamic table size the server allows (the HTTP/2 default of
/// SETTINGS_HEADER_TABLE_SIZE, which tonic's server keeps).
const TABLE_SIZE: usize = 4_096;
/// Cap on one header block (HEADERS plus CONTINUATION payloads).
const MAX_BLOCK: usize = 256 * 1024;
/// What replaces an authority the server would refuse.
const REPLACEMENT: &[u8] = b"localhost";

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A connection whose incoming header blocks are rewritten as described in
/// the module documentation.
pub struct FixAuthority<S> {
    inner: S,
    state: State,
    /// Bytes read from the client, not yet looked at.
    input: Vec<u8>,
    /// Bytes ready for the server, from `output[sent..]`.
    output: Vec<u8>,
    sent: usize,
    eof: bool,
    decoder: loona_hpack::Decoder<'static>,
    /// A header block waiting for its CONTINUATION frames.
    pending: Option<Block>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preface,
    Frames,
    /// Not HTTP/2 with prior knowledge: everything goes through as it is.
    Passthrough,
}

struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            inner,
            state: State::Preface,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            eof: false,
            decoder,
            pending: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves what can be handled from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.state {
                State::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.state = State::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.output.extend(self.input.drain(..PREFACE.len()));
                    self.state = State::Frames;
                }
                State::Passthrough => {
                    self.output.append(&mut self.input);
                    return Ok(());
                }
                State::Frames => {
                    if self.input.len() < 9 {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
                    if len > MAX_FRAME {
                        return Err(invalid(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
                    }
                    if self.input.len() < 9 + len {
                        return Ok(());
                    }
                    let frame: Vec<u8> = self.input.drain(..9 + len).collect();
                    self.frame(&frame)?;
                }
            }
        }
    }

    /// Handles one whole frame (9-byte header and payload).
    fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[9..];
        if let Some(block) = &mut self.pending {
            if kind != CONTINUATION || stream != block.stream {
                return Err(invalid("header block interrupted by another frame".into()));
            }
            block.fragment.extend_from_slice(payload);
            if block.fragment.len() > MAX_BLOCK {
                return Err(invalid(format!("header block larger than {MAX_BLOCK} bytes")));
            }
            if flags & END_HEADERS != 0 {
                let block = self.pending.take().expect("pending block");
                self.finish(block)?;
            }
            return Ok(());
        }
        match kind {
            HEADERS => {
                let mut rest = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    let (&p, r) = rest
                        .split_first()
                        .ok_or_else(|| invalid("empty padded HEADERS".into()))?;
                    (pad, rest) = (p as usize, r);
                }
                let priority = if flags & PRIORITY != 0 {
                    if rest.len() < 5 {
                        return Err(invalid("HEADERS too short for its priority".into()));
                    }
                    let (p, r) = rest.split_at(5);
                    rest = r;
                    Some(<[u8; 5]>::try_from(p).expect("5 bytes"))
                } else {
                    None
                };
                if pad > rest.len() {
                    return Err(invalid("HEADERS padding longer than the frame".into()));
                }
                let block = Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fragment: rest[..rest.len() - pad].to_vec(),
                };
                if flags & END_HEADERS != 0 {
                    self.finish(block)?;
                } else {
                    self.pending = Some(block);
                }
            }
            CONTINUATION => return Err(invalid("CONTINUATION without HEADERS".into())),
            _ => self.output.extend_from_slice(frame),
        }
        Ok(())
    }

    /// Decodes a complete header block and writes it out re-encoded.
    fn finish(&mut self, block: Block) -> io::Result<()> {
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        let mut write = |name: &[u8], value: &[u8]| {
            let value = if name == b":authority" && !valid_authority(value) {
                REPLACEMENT
            } else {
                value
            };
            literal(name, value, &mut encoded);
        };
        self.decoder
            .decode_with_cb(&block.fragment, |n, v| write(&n, &v))
            .map_err(|e| invalid(format!("HPACK: {e}")))?;
        let mut first = true;
        let mut rest: &[u8] = &encoded;
        loop {
            let room = if first && block.priority.is_some() {
                MAX_FRAME - 5
            } else {
                MAX_FRAME
            };
            let (chunk, more) = rest.split_at(rest.len().min(room));
            rest = more;
            let last = rest.is_empty();
            let mut flags = if last { END_HEADERS } else { 0 };
            let kind = if first {
                if block.end_stream {
                    flags |= END_STREAM;
                }
                if block.priority.is_some() {
                    flags |= PRIORITY;
                }
                HEADERS
            } else {
                CONTINUATION
            };
            let priority = if first { block.priority } else { None };
            let len = chunk.len() + priority.map_or(0, |p| p.len());
            self.output.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            self.output.extend_from_slice(&[kind, flags]);
            self.output.extend_from_slice(&block.stream.to_be_bytes());
            if let Some(p) = priority {
                self.output.extend_from_slice(&p);
            }
            self.output.extend_from_slice(chunk);
            first = false;
            if last {
                return Ok(());
            }
        }
    }
}

/// Whether h2 accepts `value` as `:authority` (the same parser it uses).
fn valid_authority(value: &[u8]) -> bool {
    tonic::codegen::http::uri::Authority::try_from(value).is_ok()
}

/// HPACK "literal header field without indexing, new name", no Huffman.
fn literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    for s in [name, value] {
        loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out).expect("writing to a Vec");
        out.extend_from_slice(s);
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 from the Unix socket client: {why}"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.sent < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.sent);
                buf.put_slice(&this.output[this.sent..this.sent + n]);
                this.sent += n;
                if this.sent == this.output.len() {
                    this.output.clear();
                    this.sent = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left is a truncated frame: hand it on as it
                // is and let the server see the connection end mid-frame.
                this.output.append(&mut this.input);
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.state == State::Passthrough && this.input.is_empty() {
                // Nothing to rewrite: read straight into the caller's buffer.
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            } else {
                this.input.extend_from_slice(read.filled());
            }
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for FixAuthority<tokio::net::UnixStream> {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Splits `bytes` (after the preface) into frames.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
            bytes = &bytes[9 + len..];
        }
        out
    }

    /// What the server reads when the client writes `input` and closes.
    async fn through(input: Vec<u8>) -> io::Result<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            // Small writes, so frames arrive split at odd places.
            for chunk in input.chunks(7) {
                client.write_all(chunk).await.unwrap();
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut fixed = FixAuthority::new(server);
        let mut out = Vec::new();
        let res = fixed.read_to_end(&mut out).await;
        drop(writer.await);
        res.map(|_| out)
    }

    fn request(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/berth.v1.NetworkService/ListNetworks".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
        ]
    }

    fn encode(enc: &mut loona_hpack::Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        enc.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    #[tokio::test]
    async fn socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        // The client's encoder indexes the bad authority into its dynamic
        // table, and the second request refers to it by index.
        let mut enc = loona_hpack::Encoder::new();
        let first = encode(&mut enc, &request(b"/run/berth/api.sock"));
        let second = encode(&mut enc, &request(b"/run/berth/api.sock"));
        assert!(second.len() < first.len(), "second block uses the dynamic table");
        let data = frame(0x0, END_STREAM, 1, b"\0\0\0\0\0");
        let settings = frame(0x4, 0, 0, &[]);
        let mut input = PREFACE.to_vec();
        input.extend(&settings);
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        input.extend(&data);
        // Split across a HEADERS and a CONTINUATION, padded, with priority.
        let (a, b) = second.split_at(4);
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, b));

        let out = through(input).await.unwrap();
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let got = frames(&out[PREFACE.len()..]);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], (0x4, 0, 0, vec![]));
        assert_eq!(got[2], (0x0, END_STREAM, 1, b"\0\0\0\0\0".to_vec()));
        let mut server = loona_hpack::Decoder::new();
        let (kind, flags, stream, block) = &got[1];
        assert_eq!((*kind, *flags, *stream), (HEADERS, END_HEADERS, 1));
        assert_eq!(server.decode(block).unwrap(), request(b"localhost"));
        let (kind, flags, stream, block) = &got[3];
        assert_eq!(
            (*kind, *flags, *stream),
            (HEADERS, END_HEADERS | END_STREAM | PRIORITY, 3)
        );
        assert_eq!(&block[..5], &[0, 0, 0, 0, 16]);
        assert_eq!(server.decode(&block[5..]).unwrap(), request(b"localhost"));
    }

    #[tokio::test]
    async fn valid_authorities_are_kept() {
        let mut enc = loona_hpack::Encoder::new();
        for authority in [&b"localhost"[..], b"127.0.0.1:7420", b"berth-api"] {
            let mut input = PREFACE.to_vec();
            input.extend(frame(
                HEADERS,
                END_HEADERS,
                1,
                &encode(&mut enc, &request(authority)),
            ));
            let out = through(input).await.unwrap();
            let got = frames(&out[PREFACE.len()..]);
            let mut server = loona_hpack::Decoder::new();
            assert_eq!(server.decode(&got[0].3).unwrap(), request(authority));
            enc = loona_hpack::Encoder::new();
        }
    }

    #[tokio::test]
    async fn long_header_blocks_are_split_into_continuations() {
        let mut headers = request(b"/tmp/x.sock");
        headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block =
            loona_hpack::Encoder::new().encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut input = PREFACE.to_vec();
        let mut chunks = block.chunks(MAX_FRAME).peekable();
        let mut kind = HEADERS;
        while let Some(c) = chunks.next() {
            let flags = if chunks.peek().is_none() { END_HEADERS } else { 0 };
            input.extend(frame(kind, flags, 1, c));
            kind = CONTINUATION;
        }
        let out = through(input).await.unwrap();
        let got = frames(&out[PREFACE.len()..]);
        assert!(got.len() >= 3);
        assert!(got.iter().all(|f| f.3.len() <= MAX_FRAME));
        assert_eq!(got[0].0, HEADERS);
        assert!(got[1..].iter().all(|f| f.0 == CONTINUATION));
        assert!(got[..got.len() - 1].iter().all(|f| f.1 & END_HEADERS == 0));
        assert_eq!(got.last().unwrap().1, END_HEADERS);
        let whole: Vec<u8> = got.iter().flat_map(|f| f.3.clone()).collect();
        let mut expect = headers.clone();
        expect[3].1 = b"localhost".to_vec();
        assert_eq!(loona_hpack::Decoder::new().decode(&whole).unwrap(), expect);
    }

    #[tokio::test]
    async fn other_protocols_pass_through() {
        let input = b"GET / HTTP/1.1\r\nHost: /run/berth/api.sock\r\n\r\n".to_vec();
        assert_eq!(through(input.clone()).await.unwrap(), input);
    }

    #[tokio::test]
    async fn broken_framing_closes_the_connection() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, b"x"));
        let err = through(input).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff, 0x7f]));
        assert!(through(input).await.is_err());
    }
}
