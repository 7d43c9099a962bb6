"""Shared helpers of the Python bench scripts: start a server under test pinned to CPU 0
(ringpoll, a reference peer from bench-scripts/build-peers.sh, or nginx), and stop it.

Every start function returns a `Server`, or None when that server is not available here.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RINGPOLL = os.path.join(ROOT, "target/release/ringpoll")
PEERS = os.path.join(ROOT, "target/peers/release")
SERVER_CPU = "0"
LOAD_CPU = "1"


@dataclass
class Server:
    proc: subprocess.Popen
    addr: str
    tmpdir: str | None = None
    # Started for this server and stopped with it (a proxy's upstream).
    deps: list = field(default_factory=list)

    def target(self, mode):
        return f"http://{self.addr}/" if mode == "http" else self.addr

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        for d in self.deps:
            d.stop()


def emit(lines, out=None):
    """Markdown lines to the file `out`, or to stdout without one."""
    text = "\n".join(lines) + "\n"
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def ensure_ringpoll():
    if not os.path.exists(RINGPOLL):
        subprocess.run(["cargo", "build", "--release"], check=True, cwd=ROOT)


def _announced(cmd, env=None, cpu=SERVER_CPU):
    p = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, env=env)
    line = p.stdout.readline().strip()
    if not line.startswith("listening on "):
        p.kill()
        raise RuntimeError(f"{cmd[0]} did not start: {line!r}")
    return Server(p, line.removeprefix("listening on "))


def start_ringpoll(mode, backend, *extra, cpu=SERVER_CPU):
    """`ringpoll serve`, one worker, on `cpu` (pinned by taskset, so --no-pin is not needed)."""
    return _announced([RINGPOLL, "serve", "--mode", mode, "--backend", backend, "--workers", "1",
                       "--listen", "127.0.0.1:0", *extra], env=dict(os.environ, RINGPOLL_LOG="warn"), cpu=cpu)


def start_peer(binary):
    """A reference server built by bench-scripts/build-peers.sh (tokio-echo, tokio-http, monoio-echo)."""
    path = os.path.join(PEERS, binary)
    return _announced([path, "--listen", "127.0.0.1:0"]) if os.path.exists(path) else None


def start_nginx(upstream=None):
    """nginx answering `return 200 "Hello, World!"`: one worker, access log off. With
    `upstream` (HOST:PORT), an nginx `stream` TCP proxy to it instead (as `ringpoll compare`)."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not nginx:
        return None
    module = next((m for m in ("/usr/lib/nginx/modules/ngx_stream_module.so",
                               "/usr/share/nginx/modules/ngx_stream_module.so") if os.path.exists(m)), None)
    if upstream and not module:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tempfile.mkdtemp(prefix="ringpoll-nginx-")
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        if upstream:
            f.write(f"load_module {module};\n")
        f.write(f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n"
                f"error_log {d}/error.log warn;\nevents {{ worker_connections 20000; multi_accept on; }}\n")
        if upstream:
            f.write(f"stream {{\n server {{\n  listen 127.0.0.1:{port} reuseport;\n  proxy_pass {upstream};\n"
                    f"  tcp_nodelay on;\n }}\n}}\n")
        else:
            f.write(f"http {{\n access_log off;\n keepalive_requests 100000000;\n server {{\n"
                    f"  listen 127.0.0.1:{port} reuseport;\n"
                    f"  location / {{ default_type text/plain; return 200 \"Hello, World!\"; }}\n }}\n}}\n")
    p = subprocess.Popen(["taskset", "-c", SERVER_CPU, nginx, "-p", d, "-c", conf, "-e", f"{d}/error.log"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(250):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return Server(p, f"127.0.0.1:{port}", d)
        except OSError:
            time.sleep(0.02)
    p.kill()
    shutil.rmtree(d, ignore_errors=True)
    return None


def behind_upstream(start):
    """A start function for a proxy: a ringpoll echo upstream on the load CPU (not measured, as
    in `ringpoll compare`), then `start(upstream_addr)`; the upstream stops with the proxy."""
    def go():
        up = start_ringpoll("echo", "epoll", cpu=LOAD_CPU)
        try:
            srv = start(up.addr)
        except Exception:
            up.stop()
            raise
        if srv is None:
            up.stop()
            return None
        srv.deps.append(up)
        return srv
    return go


def load_cmd(mode, conns, target, secs, warmup="0s", size=64, idle=0):
    """`ringpoll load -t1` pinned to the load CPU, JSON output (plus `idle` idle connections)."""
    extra = ["--idle", str(idle)] if idle else []
    if mode == "echo":  # `ringpoll load` refuses a flag its mode would ignore
        extra += ["--size", str(size)]
    return ["taskset", "-c", LOAD_CPU, RINGPOLL, "load", "--mode", mode, "-t1",
            "-c", str(conns), "-d", f"{secs}s", "--warmup", warmup, *extra, "--json", target]


def cpu_times(pid):
    """(utime, stime) of a process, in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def cpu_seconds(pid):
    """utime+stime of a process, in seconds."""
    return sum(cpu_times(pid))


# The workloads both scripts look at, with the servers that take part in each.
WORKLOADS = [
    ("echo-64B-c64", "echo", 64, [("epoll", lambda: start_ringpoll("echo", "epoll")),
                                  ("uring", lambda: start_ringpoll("echo", "uring")),
                                  ("tokio", lambda: start_peer("tokio-echo")),
                                  ("monoio", lambda: start_peer("monoio-echo"))]),
    ("echo-64B-c512", "echo", 512, [("epoll", lambda: start_ringpoll("echo", "epoll")),
                                    ("uring", lambda: start_ringpoll("echo", "uring")),
                                    ("tokio", lambda: start_peer("tokio-echo")),
                                    ("monoio", lambda: start_peer("monoio-echo"))]),
    ("http-c64", "http", 64, [("epoll", lambda: start_ringpoll("http", "epoll")),
                              ("uring", lambda: start_ringpoll("http", "uring")),
                              ("tokio", lambda: start_peer("tokio-http")),
                              ("nginx", start_nginx)]),
    # Proxy, 16 KiB messages (the load speaks echo through the proxy; see SIZES).
    ("proxy-16KiB-c64", "echo", 64, [
        ("epoll", behind_upstream(lambda up: start_ringpoll("proxy", "epoll", "--upstream", up))),
        ("uring", behind_upstream(lambda up: start_ringpoll("proxy", "uring", "--upstream", up))),
        ("nginx", behind_upstream(lambda up: start_nginx(up)))]),
]

# Message size of a workload's requests, where not 64 bytes.
SIZES = {"proxy-16KiB-c64": 16 * 1024}
