#!/usr/bin/env python3
# mirror.py: a throw-away HTTP mirror for the Portage fetch harness (standard library only).
#
#   python3 integration/portage/mirror.py SERVE_DIR REQUEST_LOG
#
# Serves SERVE_DIR on 127.0.0.1 at an ephemeral port, prints that port alone on the first
# stdout line (flushed), then appends "METHOD PATH" to REQUEST_LOG for every request
# (one line, written and flushed before the response). Runs until killed (SIGTERM/SIGINT).
import functools
import http.server
import sys

serve_dir, log_path = sys.argv[1], sys.argv[2]
log = open(log_path, "a", buffering=1)  # line-buffered: each request line hits the file at once


class Handler(http.server.SimpleHTTPRequestHandler):
    def parse_request(self):  # every request, whatever its method, before any response
        ok = super().parse_request()
        if ok:
            log.write(f"{self.command} {self.path}\n")
        return ok

    def log_message(self, *args):  # keep stderr quiet
        pass


server = http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0), functools.partial(Handler, directory=serve_dir)
)
server.daemon_threads = True
print(server.server_address[1], flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
