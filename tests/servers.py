"""Servers the tests start on 127.0.0.1 (mlflow server, mlflow models serve, mlflow ui), written once."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    """A JSON POST, as curl would send it; the reply's ``predictions``."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]


@contextlib.contextmanager
def serving(args, ready_path: str, *, env=None, log=None, timeout: float = 180, command=None):
    """Runs ``python -m mlflow ARGS --host 127.0.0.1 --port P`` and yields ``http://127.0.0.1:P`` once
    ``ready_path`` answers; stops the server's whole process group by its PID afterwards.

    ``command(P)``, if given, is the command line to run instead (one that serves on 127.0.0.1:P, such as
    ``make serve``), with ``env`` as it is.
    """
    port = free_port()
    env = dict(os.environ if env is None else env)
    if command is None:
        # Its uvicorn is found on PATH, next to this interpreter.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        command = [sys.executable, "-m", "mlflow", *args, "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = command(port)
    output = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(base + ready_path, timeout=2)
                break
            except OSError:
                tail = open(log).read()[-3000:] if log else ""
                assert server.poll() is None, f"mlflow {args[0]} exited: {tail}"
                assert time.time() < deadline, f"mlflow {args[0]} did not answer {ready_path} within {timeout} s"
                time.sleep(0.5)
        yield base
    finally:
        # The whole group: the server's uvicorn workers too, even if the server itself has exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if log:
            output.close()
