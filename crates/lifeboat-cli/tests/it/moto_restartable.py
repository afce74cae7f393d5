"""A moto S3 server whose objects survive a restart, for the test that stops the vault's
server under capture and starts it again (moto keeps objects in memory only).

    python3 moto_restartable.py PORT STATE BUCKET

It serves S3 on 127.0.0.1:PORT. Started with a STATE file, it first loads the buckets and
objects saved there; started without one, it creates BUCKET. On SIGTERM it stops
listening, saves every bucket and object to STATE and exits. It prints "ready" once it
listens.
"""

import os
import pickle
import signal
import sys
import threading
import time

port, state, bucket = int(sys.argv[1]), sys.argv[2], sys.argv[3]

from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.s3.models import s3_backends  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
if os.path.exists(state):
    with open(state, "rb") as file:
        saved = pickle.load(file)
    for name, objects in saved.items():
        backend.create_bucket(name, "us-east-1")
        for key, value in objects.items():
            backend.put_object(name, key, value)
else:
    backend.create_bucket(bucket, "us-east-1")

server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
done = threading.Event()


def stop(*_):
    server.stop()
    # Requests already being handled finish before the objects are saved.
    time.sleep(1)
    saved = {
        name: {key: found.value for key, found in b.keys.items()}
        for name, b in backend.buckets.items()
    }
    with open(state + ".tmp", "wb") as file:
        pickle.dump(saved, file)
    os.replace(state + ".tmp", state)
    done.set()


signal.signal(signal.SIGTERM, stop)
server.start()
print("ready", flush=True)
done.wait()
