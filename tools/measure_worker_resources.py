#!/usr/bin/env python3
"""CPU and memory of a generated worker at stated rates: the figures behind
the resource requests and limits of the generated deploy/kubernetes.

    cargo generate --path . template --name measured --silent --destination /tmp/m
    (cd /tmp/m/measured && cargo build --release)
    python3 tools/measure_worker_resources.py \\
        --binary <target>/release/measured \\
        --config /tmp/m/measured/deploy/kubernetes/base/config.yaml

Starts a redis-server of its own on a free port (never 6379), runs the
worker with the given config file (REDIS_URL and METRICS_ADDR pointed at
loopback), and measures the worker's process from /proc: CPU in cores
(user + system time over wall time) and resident memory (VmRSS, its highest
sample; VmHWM at the end). Phases: idle, each --rates entry per second for
--seconds, then --burst entries added as fast as one pipelined producer can
and drained. Prints a Markdown table. The entries are `data` fields of a
small JSON object, which the example business logic validates.
"""

import argparse
import os
import socket
import subprocess
import tempfile
import time


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        out += b"$%d\r\n%s\r\n" % (len(arg), arg)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port if port != 6379 else free_port()


class Worker:
    def __init__(self, pid):
        self.pid = pid
        self.hz = os.sysconf("SC_CLK_TCK")

    def kib(self, field="VmRSS"):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field}")

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.hz


class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buffer = b""

    def send(self, commands):
        self.sock.sendall(b"".join(commands))

    def replies(self, count):
        """Reads `count` replies of one line or one bulk string each."""
        done = 0
        while True:
            while done < count:
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    break
                line = self.buffer[:end]
                if line.startswith(b"$") and line != b"$-1":
                    length = int(line[1:])
                    if len(self.buffer) < end + 2 + length + 2:
                        break
                    self.buffer = self.buffer[end + 2 + length + 2:]
                else:
                    self.buffer = self.buffer[end + 2:]
                done += 1
            if done == count:
                return
            self.buffer += self.sock.recv(1 << 20)

    def group_done(self, stream, group):
        """Whether the group has no lag and nothing pending."""
        self.sock.sendall(resp("XINFO", "GROUPS", stream))
        time.sleep(0.05)
        data = self.sock.recv(1 << 16).split(b"\r\n")
        fields = {}
        for i, item in enumerate(data[:-1]):
            if item in (b"lag", b"pending", b"name"):
                fields[item] = data[i + 1] if not data[i + 1].startswith(b"$") else data[i + 2]
        return fields.get(b"lag") == b":0" and fields.get(b"pending") == b":0"


def xadds(stream, start, count):
    return [resp("XADD", stream, "*", "data", '{"n":%d}' % (start + i)) for i in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--stream", default="my-stream")
    parser.add_argument("--group", default="my-group")
    parser.add_argument("--rates", default="1000,10000")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--burst", type=int, default=1_000_000)
    options = parser.parse_args()

    port, metrics_port = free_port(), free_port()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", work],
            stdout=subprocess.DEVNULL,
        )
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REDIS_", "WORKER_", "METRICS_", "LOG_", "HEARTBEAT_"))}
        env.update(REDIS_URL=f"redis://127.0.0.1:{port}", METRICS_ADDR=f"127.0.0.1:{metrics_port}")
        time.sleep(0.5)
        process = subprocess.Popen([options.binary, "run", "--config", options.config], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker = Worker(process.pid)
        client = Redis(port)
        try:
            time.sleep(3)
            cpu, wall = worker.cpu_seconds(), time.time()
            time.sleep(options.idle_seconds)
            rows.append(("idle", (worker.cpu_seconds() - cpu) / (time.time() - wall), worker.kib()))

            for rate in [int(r) for r in options.rates.split(",") if r]:
                per_tick = max(1, rate // 10)
                cpu, start, sent, peak = worker.cpu_seconds(), time.time(), 0, 0
                while time.time() - start < options.seconds:
                    client.send(xadds(options.stream, sent, per_tick))
                    client.replies(per_tick)
                    sent += per_tick
                    peak = max(peak, worker.kib())
                    time.sleep(max(0.0, start + sent / rate - time.time()))
                rows.append((f"{rate:,} entries/s", (worker.cpu_seconds() - cpu) / (time.time() - start), peak))
                time.sleep(3)

            cpu, start, sent, peak = worker.cpu_seconds(), time.time(), 0, 0
            while sent < options.burst:
                n = min(5000, options.burst - sent)
                client.send(xadds(options.stream, sent, n))
                client.replies(n)
                sent += n
                peak = max(peak, worker.kib())
            added_in = time.time() - start
            while not client.group_done(options.stream, options.group):
                peak = max(peak, worker.kib())
                time.sleep(0.2)
            took = time.time() - start
            rows.append((
                f"{options.burst:,} entries added in {added_in:.1f} s, drained in {took:.1f} s",
                (worker.cpu_seconds() - cpu) / took,
                peak,
            ))
            high_water = worker.kib("VmHWM")
        finally:
            process.terminate()
            process.wait(60)
            redis.terminate()
            redis.wait()

    print("| load | CPU (cores) | RSS (MiB, highest sample) |")
    print("| --- | --- | --- |")
    for load, cores, kib in rows:
        print(f"| {load} | {cores:.4f} | {kib / 1024:.1f} |")
    print(f"\nVmHWM at the end: {high_water / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
