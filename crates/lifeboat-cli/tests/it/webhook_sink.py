"""An HTTP receiver for the webhook tests: every POST is saved in a directory as JSON
(NNNNNN.json: {"path", "headers", "body"}, in the order received) and answered with the
status in the file DIR/status (200 when there is none).

    python3 webhook_sink.py PORT DIR

It listens on 127.0.0.1:PORT and prints "ready" once it does; it stops on SIGTERM.
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, directory = int(sys.argv[1]), sys.argv[2]
os.makedirs(directory, exist_ok=True)
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        try:
            with open(os.path.join(directory, "status")) as file:
                status = int(file.read().strip())
        except FileNotFoundError:
            status = 200
        with lock:
            n = len([f for f in os.listdir(directory) if f.endswith(".json")])
            path = os.path.join(directory, "%06d.json" % (n + 1))
            with open(path + ".part", "w") as file:
                json.dump(
                    {
                        "path": self.path,
                        "status": status,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body.decode("utf-8"),
                    },
                    file,
                )
            os.rename(path + ".part", path)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
server.shutdown()
