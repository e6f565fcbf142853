"""Runs nginx (Debian's /usr/sbin/nginx) on deploy/nginx/kiln.conf for the integration tests: the
file's upstream `server` lines, its `listen` line and its access_log path are rewritten to local
replicas, a free port and a temporary folder; everything nginx writes (pid, logs, temp files)
stays under that folder. Works as root and as another user. 127.0.0.1 only; every wait is bounded."""
import json
import os
import re
import signal
import socket
import subprocess
import time

NGINX = "/usr/sbin/nginx"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILN_CONF = os.path.join(REPO, "deploy", "nginx", "kiln.conf")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conf_text():
    with open(KILN_CONF) as f:
        return f.read()


def client_max_body_bytes(text=None):
    """client_max_body_size of kiln.conf in bytes (k/m/g suffixes as nginx reads them)."""
    m = re.search(r"^\s*client_max_body_size\s+(\d+)([kKmMgG]?)\s*;", text or conf_text(), re.M)
    if not m:
        raise AssertionError("%s: no client_max_body_size line" % KILN_CONF)
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def adapt(text, upstreams, port, log_path):
    """kiln.conf with its upstream's server lines replaced by `upstreams` (host:port, parameters of
    the original first line kept), its listen line by `port` on 127.0.0.1 and its access_log path
    by `log_path`. Fails when the file no longer has the lines the convention promises."""
    block = re.search(r"^upstream\s+kiln\s*\{(.*?)^\}", text, re.M | re.S)
    if not block:
        raise AssertionError("%s: no `upstream kiln { ... }` block" % KILN_CONF)
    server_re = re.compile(r"^([ \t]*)server\s+(\S+:\d+)((?:\s+[^;\s]+)*)\s*;[^\n]*\n", re.M)
    servers = server_re.findall(block.group(1))
    if len(servers) < 2:
        raise AssertionError("%s: the upstream lists %d `server HOST:PORT ...;` lines, expected several"
                             % (KILN_CONF, len(servers)))
    indent, _, params = servers[0]
    first = [True]

    def replace(m):
        if not first[0]:
            return ""
        first[0] = False
        return "".join("%sserver %s%s;\n" % (indent, u, params) for u in upstreams)

    body = server_re.sub(replace, block.group(1))
    text = text[: block.start(1)] + body + text[block.end(1):]
    text, n = re.subn(r"^([ \t]*)listen\s+[^;]+;", r"\g<1>listen 127.0.0.1:%d;" % port, text, flags=re.M)
    if n != 1:
        raise AssertionError("%s: expected one `listen` line, found %d" % (KILN_CONF, n))
    text, n = re.subn(r"^([ \t]*)access_log\s+\S+", lambda m: m.group(1) + "access_log " + log_path, text, flags=re.M)
    if n != 1:
        raise AssertionError("%s: expected one `access_log` line, found %d" % (KILN_CONF, n))
    return text


class Nginx:
    """nginx in the foreground (`daemon off`) with kiln.conf adapted to `upstreams`."""

    def __init__(self, workdir, upstreams):
        self.dir = os.path.join(workdir, "nginx")
        os.makedirs(self.dir)
        self.port = free_port()
        self.access_log = os.path.join(self.dir, "access.log")
        self.error_log = os.path.join(self.dir, "error.log")
        with open(os.path.join(self.dir, "kiln.conf"), "w") as f:
            f.write(adapt(conf_text(), upstreams, self.port, self.access_log))
        main = ["daemon off;", "worker_processes 1;", "pid %s/nginx.pid;" % self.dir,
                "error_log %s info;" % self.error_log, "events { worker_connections 512; }", "http {"]
        # as root, nginx's workers would switch to `nobody`, which cannot enter the private
        # temporary folder; as another user the directive does not apply (and would be warned about)
        if os.geteuid() == 0:
            main.insert(0, "user root;")
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            main.append("    %s_temp_path %s/%s_temp;" % (kind, self.dir, kind))
        main += ["    include %s/kiln.conf;" % self.dir, "}"]
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(main) + "\n")
        cmd = [NGINX, "-p", self.dir, "-c", self.conf, "-e", self.error_log]
        check = subprocess.run(cmd + ["-t"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise AssertionError("nginx -t refused the adapted kiln.conf:\n%s\n%s" % (check.stderr, self.text()))
        self.stderr = open(os.path.join(self.dir, "stderr.log"), "wb")
        # a process group of its own, so that kill() also reaches workers a killed master leaves behind
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited with %d at start:\n%s" % (self.proc.returncode, self.errors(all_lines=True)))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise AssertionError("nginx did not listen on %d within 10 s" % self.port)
                time.sleep(0.02)

    def text(self):
        with open(os.path.join(self.dir, "kiln.conf")) as f:
            return f.read()

    def errors(self, all_lines=False):
        """The error log's lines at level error or worse (every line with all_lines)."""
        lines = []
        for path in (self.error_log, os.path.join(self.dir, "stderr.log")):
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    lines += f.read().splitlines()
        if all_lines:
            return "\n".join(lines)
        return [ln for ln in lines if re.search(r"\[(error|crit|alert|emerg)\]", ln)]

    def log_entries(self):
        """The access log's JSON lines (kiln.conf's kiln_upstream format)."""
        if not os.path.exists(self.access_log):
            return []
        out = []
        with open(self.access_log) as f:
            for line in f:
                if line.endswith("\n"):
                    out.append(json.loads(line))
        return out

    def stop(self, timeout=15):
        """Graceful shutdown (SIGQUIT: finish the requests in progress); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("nginx did not exit within %g s of SIGQUIT" % timeout)
        finally:
            self.stderr.close()

    def kill(self):
        """Fast shutdown (SIGTERM: the master stops its workers first); SIGKILL to the whole process
        group when the master does not exit, so that no worker outlives the test."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the unreaped master still holds the group id
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        if not self.stderr.closed:
            self.stderr.close()
