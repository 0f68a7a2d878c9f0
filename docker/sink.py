#!/usr/bin/python3
"""SMTP sink for the compose rig: stores every message as /out/<n>.eml."""
import asyncore
import os
import smtpd
import sys

out = sys.argv[2] if len(sys.argv) > 2 else "/out"
port = int(sys.argv[1]) if len(sys.argv) > 1 else 2526


class Sink(smtpd.SMTPServer):
    n = 0

    def process_message(self, peer, mailfrom, rcpttos, data, **kw):
        Sink.n += 1
        path = os.path.join(out, "%d.eml" % Sink.n)
        with open(path + ".tmp", "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        os.rename(path + ".tmp", path)


os.makedirs(out, exist_ok=True)
Sink(("127.0.0.1", port), None, decode_data=False)
print("sink listening on 127.0.0.1:%d" % port, flush=True)
asyncore.loop()
