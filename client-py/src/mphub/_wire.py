"""The wire: frame headers, a frame splitter for big reads, and the HMAC handshake.

All of it is sans-I/O so the threaded client and the asyncio client share it. These are facts of
CPython's `multiprocessing.connection`, not choices: a 4-byte big-endian signed length (or -1
and an 8-byte length for frames over 2 GiB - 1), and the challenge/response of CPython 3.11
(HMAC-MD5 on 20 bytes) and 3.12+ (`{digest}` prefix, sha256 by default).
"""

from __future__ import annotations

import hmac
import os
import pickle
import struct
from typing import List, Optional, Tuple

from .errors import AuthenticationError, MphubError

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"
_DIGESTS = frozenset({b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"})
_MAX_DIGEST_NAME = max(len(d) for d in _DIGESTS)
_LEGACY_LENGTHS = (20, 16)  # a 3.11 challenge body, a raw HMAC-MD5 answer
HANDSHAKE_FRAME_LIMIT = 256  # CPython's own recv_bytes(256) during the handshake

_I32 = struct.Struct("!i")
_I32_U64 = struct.Struct("!iQ")
_SHORT_MAX = 0x7FFFFFFF


class ProtocolError(MphubError):
    """The peer sent something that is not a frame."""


def header(n: int) -> bytes:
    """The length header CPython's `send_bytes` writes for a body of `n` bytes."""
    if n > _SHORT_MAX:
        return _I32_U64.pack(-1, n)
    return _I32.pack(n)


def frame(body: bytes) -> bytes:
    """A whole frame: header and body."""
    return header(len(body)) + body


class FrameSplitter:
    """Cuts frames out of a byte stream fed in chunks of any size.

    Chunks are kept as a list until a whole frame is there, so a frame of many megabytes that
    arrives in many reads is joined once, not once per read.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: List[bytes] = []
        self._have = 0
        self._want = 4

    def read_size(self, usual: int) -> int:
        """How much to ask the socket for: `usual`, or the rest of a big frame in one go."""
        missing = self._want - self._have if self._parts else 0
        return min(missing, 16 << 20) if missing > usual else usual

    def feed(self, data: bytes) -> List[memoryview]:
        """Bodies of every frame completed by `data`, in order (views into the received data)."""
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._want:
                return []
            data = b"".join(self._parts)
            self._parts = []
        n = len(data)
        view = memoryview(data)
        out = []
        pos = 0
        unpack = _I32.unpack_from
        limit = self.limit
        while True:
            avail = n - pos
            if avail < 4:
                want = 4
                break
            size = unpack(data, pos)[0]
            start = pos + 4
            if size < 0:
                if size != -1:
                    raise ProtocolError(f"negative frame length {size}")
                if avail < 12:
                    want = 12
                    break
                size = _I32_U64.unpack_from(data, pos)[1]
                start = pos + 12
            if size > limit:
                raise ProtocolError(f"frame of {size} bytes is over the limit of {limit}")
            end = start + size
            if end > n:
                want = end - pos
                break
            out.append(view[start:end])
            pos = end
        if pos < n:
            rest = data[pos:]
            self._parts = [rest]
            self._have = len(rest)
            self._want = want
        else:
            self._want = 4
        return out


def _digest_and_payload(message: bytes) -> Tuple[str, bytes]:
    if len(message) in _LEGACY_LENGTHS:
        return "md5", message
    if message.startswith(b"{"):
        curly = message.find(b"}", 1, _MAX_DIGEST_NAME + 2)
        if curly > 0:
            name = message[1:curly]
            if name in _DIGESTS:
                return name.decode("ascii"), message[curly + 1 :]
    raise AuthenticationError(f"unsupported handshake message of {len(message)} bytes")


def answer(authkey: bytes, challenge: bytes) -> bytes:
    """Our response to the broker's `#CHALLENGE#...` frame."""
    if not challenge.startswith(CHALLENGE):
        raise AuthenticationError("the server did not start with a challenge: is it an mphub broker?")
    message = challenge[len(CHALLENGE) :]
    if len(message) < _LEGACY_LENGTHS[0]:
        raise AuthenticationError("challenge too short")
    name, _ = _digest_and_payload(message)
    mac = hmac.new(authkey, message, name).digest()
    if len(message) == _LEGACY_LENGTHS[0]:
        return mac  # CPython <= 3.11 expects the raw MD5 HMAC
    return b"{" + name.encode("ascii") + b"}" + mac


def new_challenge() -> Tuple[bytes, bytes]:
    """A modern sha256 challenge: (frame body to send, message to verify against)."""
    message = b"{sha256}" + os.urandom(40)
    return CHALLENGE + message, message


def verify(authkey: bytes, message: bytes, response: bytes) -> bool:
    """True if `response` is the HMAC of `message` under `authkey` (constant time)."""
    try:
        name, mac = _digest_and_payload(response)
    except AuthenticationError:
        return False
    return hmac.compare_digest(hmac.new(authkey, message, name).digest(), mac)


# ClientHandshake states.
_ANSWER, _VERIFY, _PROVE, _PROBE, _DONE, _FAILED = range(6)
# Without an authkey the client opens with this (protocol 2: what every CPython and the broker read).
_PROBE_PING = pickle.dumps(("$ping", 0), 2)


class ClientHandshake:
    """The client's side of connection setup, a state machine over frame bodies.

    With an authkey it is CPython's `answer_challenge` then `deliver_challenge` (the broker
    challenges first). Without one it is a `("$ping", 0)` probe that must come back as
    `("$pong", 0)`: that proves the broker wants no key and speaks this protocol. Both clients
    drive it the same way:

        hs = ClientHandshake(authkey)
        send_all(hs.start())
        while not hs.done:
            send_all(hs.step(receive_small_frame()))

    Raises `AuthenticationError` on a refused key, a broker that wants a key when none was
    given, or anything that is not an mphub broker.
    """

    def __init__(self, authkey: Optional[bytes]) -> None:
        self.authkey = authkey
        self._state = _ANSWER
        self._message = b""

    def start(self) -> List[bytes]:
        """The frames the client sends before the broker says anything."""
        if self.authkey is None:
            self._state = _PROBE
            return [_PROBE_PING]
        return []

    def step(self, received: bytes) -> List[bytes]:
        """Feed the frame just received; get the frames to send next."""
        state, key = self._state, self.authkey
        if state == _PROBE:
            if received.startswith(CHALLENGE):
                raise AuthenticationError(
                    "the broker asks for an authkey; none was given: pass authkey=, or set"
                    " MPHUB_AUTHKEY (or --authkey-file PATH on the command line)"
                )
            try:
                pong = pickle.loads(received)
            except Exception:
                pong = None
            if pong != ("$pong", 0):
                raise AuthenticationError("unexpected answer to $ping: is this an mphub broker?")
            self._state = _DONE
            return []
        if key is None or state in (_DONE, _FAILED):
            raise AuthenticationError("handshake already finished")
        if state == _ANSWER:
            self._state = _VERIFY
            return [answer(key, received)]
        if state == _VERIFY:
            if received != WELCOME:
                raise AuthenticationError("the broker refused the authkey")
            body, self._message = new_challenge()
            self._state = _PROVE
            return [body]
        if not verify(key, self._message, received):
            self._state = _FAILED
            raise AuthenticationError("the broker did not prove it knows the authkey")
        self._state = _DONE
        return [WELCOME]

    @property
    def awaiting_challenge(self) -> bool:
        """True while a client with a key has heard nothing from the broker yet."""
        return self._state == _ANSWER

    @property
    def done(self) -> bool:
        """True once the broker's answer was verified (or, without a key, the probe answered)."""
        return self._state == _DONE
