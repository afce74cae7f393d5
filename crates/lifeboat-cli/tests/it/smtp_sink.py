"""An SMTP server for the notification tests: every message it accepts is saved in a
directory, one file per message (NNNNNN.eml, in the order received), and beside it what
a reader sees of it (NNNNNN.json: the subject and the plain and HTML parts, decoded).

    python3 smtp_sink.py PORT DIR

It listens on 127.0.0.1:PORT (plain SMTP, aiosmtpd) and prints "ready" once it does. It
stops on SIGTERM. A message is saved before the server answers 250, so a client that saw
250 finds it in DIR.
"""

import email
import email.policy
import json
import os
import signal
import sys
import threading

from aiosmtpd.controller import Controller

port, directory = int(sys.argv[1]), sys.argv[2]
os.makedirs(directory, exist_ok=True)
lock = threading.Lock()


class Save:
    async def handle_DATA(self, server, session, envelope):
        with lock:
            n = len([f for f in os.listdir(directory) if f.endswith(".eml")])
            path = os.path.join(directory, "%06d.eml" % (n + 1))
            temporary = path + ".part"
            with open(temporary, "wb") as file:
                file.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
                file.write(envelope.original_content)
                file.flush()
                os.fsync(file.fileno())
            message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            parts = {"subject": str(message["Subject"] or "")}
            for kind in ("plain", "html"):
                part = message.get_body(preferencelist=(kind,))
                parts[kind] = part.get_content() if part is not None else ""
            with open(path[: -len(".eml")] + ".json", "w", encoding="utf-8") as file:
                json.dump(parts, file, ensure_ascii=False)
            os.rename(temporary, path)
        return "250 OK"


controller = Controller(Save(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
controller.stop()
