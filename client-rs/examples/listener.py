"""The classic Python server loop: a multiprocessing Listener that answers each object.

    python3 client-rs/examples/listener.py          # 127.0.0.1:6000, authkey b"secret"

Then `cargo run -p mphub-client --example listener_peer` talks to it from Rust.
"""

from multiprocessing.connection import Listener

with Listener(("127.0.0.1", 6000), authkey=b"secret") as listener:
    while True:
        with listener.accept() as conn:
            print("connection from", listener.last_accepted)
            while True:
                try:
                    msg = conn.recv()
                except EOFError:
                    break
                if msg == "close":
                    break
                conn.send(("echo", msg))
